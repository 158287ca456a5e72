"""This process's place in the job: rank and world size as torchrun sets them."""

from __future__ import annotations

import os
import socket


def world() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def single_process_rendezvous(env=os.environ) -> dict:
    """A one-process DeepSpeed run started as plain ``python`` (offloadbench.launch) gets the
    variables ``torchrun --standalone --nproc_per_node 1`` would give it: DeepSpeed's
    init_distributed and accelerate read the rank, world size and rendezvous address from them
    (without them DeepSpeed looks for MPI). A free port on the loopback interface, as torchrun's
    standalone mode picks one. Variables already set (the process was launched by torchrun or srun)
    are left as they are. Returns what it set."""
    if "RANK" in env or "WORLD_SIZE" in env:
        return {}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    values = {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    env.update(values)
    return values
