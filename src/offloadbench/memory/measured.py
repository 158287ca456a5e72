"""What a published GPU measurement counts beside the tensors the model predicts (for comparing a
prediction with a number measured elsewhere, benchmarks/memory_validation.py).

- allocated (torch.cuda.max_memory_allocated) and torch's other peaks (active, reserved): tensors
  only; reserved adds the caching allocator's slack, which is not predicted.
- nvml (nvidia-smi, NVML used memory) and unspecified figures ("memory consumed per GPU"): the
  process's CUDA context and library workspaces are in them as well; they are added as one
  constant, CUDA_CONTEXT_BYTES, the ~0.5 GiB the hardware table already names (report.py).
"""

from __future__ import annotations

from .units import MiB

CUDA_CONTEXT_BYTES = 512 * MiB  # CUDA context + cuBLAS/cuDNN workspaces of one process, roughly
KINDS = {
    "allocated": "torch.cuda.max_memory_allocated: tensors only",
    "reserved": "torch.cuda.max_memory_reserved: tensors plus the caching allocator's slack (not predicted)",
    "torch": "one of torch's peaks (active, allocated or reserved; not said which): tensors only",
    "nvml": "NVML / nvidia-smi used memory: tensors, allocator slack and the CUDA context (~0.5 GiB added)",
    "unspecified": "not said how it was read: counted as NVML (the CUDA context, ~0.5 GiB, added)",
}


def comparable_gpu_bytes(predicted_gpu_total: int, kind: str) -> int:
    """The predicted GPU peak as a measurement of ``kind`` (a key of KINDS) would show it."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of GPU measurement {kind!r}: one of {sorted(KINDS)}")
    return predicted_gpu_total + (CUDA_CONTEXT_BYTES if kind in ("nvml", "unspecified") else 0)


def gpu_needed(prediction: dict) -> int:
    """Bytes a run needs on its card (a memory.predict.predict result for CUDA): the larger of its
    load and training peaks (a ZeRO-3 QLoRA model sits whole on one GPU before DeepSpeed
    partitions it), plus the CUDA context. The one rule every "does it fit" decision uses."""
    return max(prediction["predicted"]["gpu"]["total"], prediction["predicted_load"]["gpu"]) + CUDA_CONTEXT_BYTES
