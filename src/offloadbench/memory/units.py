"""Byte units and the bytes per element of the dtypes a run trains in, shared by the memory model's
modules."""

from __future__ import annotations

GiB, MiB = 1024**3, 1024**2
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
