"""This process's place in the job: rank and world size as torchrun sets them."""

from __future__ import annotations

import os


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
