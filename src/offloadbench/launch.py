"""The command that starts one training job: plain Python, or torchrun with one process per rank.

DeepSpeed and multi-process runs go through torchrun (which `accelerate launch` and the
`deepspeed` launcher also wrap); Trainer reads the rank and world size torchrun sets.
"""

from __future__ import annotations


def launcher_command(spec: dict) -> str:
    """The launcher prefix for `-m offloadbench.train` of a resolved run spec."""
    if spec["deepspeed"] or spec["world_size"] > 1:
        return f"torchrun --standalone --nproc_per_node {spec['world_size']}"
    return "python"
