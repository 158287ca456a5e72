"""The command that starts one training job, from the run's ``world_size`` and ``num_nodes``.

- one process: ``python``, DeepSpeed runs too: the training process sets the one-process
  rendezvous torchrun would (``training.world.single_process_rendezvous``), as Hugging Face's
  DeepSpeed guide does for a notebook. torchrun's agent is a process of its own that imports torch
  before it starts the rank: ~4 s a job on the 2-core machine, for nothing to coordinate.
- several processes on one machine: ``torchrun --standalone --nproc_per_node <ws>``
  (``accelerate launch`` and the ``deepspeed`` launcher wrap the same elastic agent); Trainer reads
  the rank and world size torchrun sets.
- several machines (Slurm only): ``srun`` starts one ``python -m offloadbench.launch`` per node in
  the job's allocation, and :func:`main` turns the Slurm environment into torchrun's c10d
  rendezvous (first node of the allocation, port from the job id) and runs torchrun there with
  ``world_size / num_nodes`` processes. The Slurm executor plugin runs such a job's shell command
  once, on the first node, without wrapping it in its own ``srun -n1`` (the rule sets the ``mpi``
  resource for it), so this ``srun`` gets every node, CPU and GPU of the allocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

RDZV_PORT_BASE = 29500  # torchrun's default port; jobs sharing a first node get different ports


ACCELERATORS = ("gpu", "none")  # config key `accelerator`: what each rank gets from the executor


def job_resources(spec: dict, accelerator: str, threads: int) -> dict:
    """The executor resources of a run's training job (None: not set), as the Slurm plugin reads
    them, for ``accelerator`` (config key: ``gpu`` or ``none``) and the job's ``threads`` (CPUs of
    each node of the job).

    gpu: one machine asks for ``--nodes=1 --gpus=<ws>``; several for ``--nodes=N --ntasks=N
    --gres=gpu:<ws/N>`` (``--gpus`` counts over all nodes), no ``--ntasks-per-gpu`` (tasks_per_gpu
    0); ``cpus_per_gpu`` is each rank's share of ``threads`` (a profile may set it).
    none: no GPU and no gres; ``cpus_per_task`` = ``threads`` (Slurm ``--cpus-per-task``: one task
    per node, so each node gives the job ``threads`` CPUs, shared out over its ranks by
    :func:`rank_threads`); several machines ask for ``--nodes=N --ntasks=N``.
    Either way a job over several machines sets ``mpi`` so that the plugin runs the command once
    instead of inside ``srun -n1``."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {', '.join(ACCELERATORS)}, not {accelerator!r}")
    ws, nodes = spec["world_size"], spec["num_nodes"]
    out = dict.fromkeys(("gpu", "gres", "tasks", "tasks_per_gpu", "mpi", "cpus_per_gpu", "cpus_per_task"))
    out["nodes"] = nodes
    if nodes > 1:
        out.update(tasks=nodes, mpi="srun")
    if accelerator == "none":
        out["cpus_per_task"] = max(1, threads)
    elif nodes == 1:
        out.update(gpu=ws, cpus_per_gpu=rank_threads(spec, threads))
    else:
        out.update(gres=f"gpu:{ws // nodes}", tasks_per_gpu=0, cpus_per_gpu=rank_threads(spec, threads))
    return out


def cuda_visible(devices: str = "/dev") -> bool:
    """Whether jobs started here can see an NVIDIA GPU: a /dev/nvidia<N> device node (what the
    driver and a container started with --gpus create) and CUDA_VISIBLE_DEVICES not emptied. Read
    without importing torch, so the Snakefile stays light."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return any(p.name[len("nvidia") :].isdigit() for p in Path(devices).glob("nvidia*"))


def job_threads(spec: dict, accelerator: str, cores: int, gpu_here: bool) -> int:
    """The CPUs (Snakemake ``threads``) of a job that runs ``offloadbench.train`` on ``spec``:
    with ``accelerator: none`` and no GPU in sight, ``training.cpu_threads`` per rank on each node,
    so that runs too small to use every core run side by side, one core each (the scheduler never
    gives out more than ``--cores``); otherwise, and where cpu_threads is null, every core, so the
    job runs alone. A GPU in sight keeps every job alone although the config says ``none``: jobs
    side by side would share the GPU, and its NVML memory counts every process on it."""
    per_rank = spec["training"].get("cpu_threads")
    if accelerator != "none" or gpu_here or per_rank is None:
        return cores
    return max(1, min(cores, per_rank * ranks_per_node(spec)))


def ranks_per_node(spec: dict) -> int:
    return spec["world_size"] // spec["num_nodes"]


def rank_threads(spec: dict, cpus: int) -> int:
    """Threads of each rank (its OMP_NUM_THREADS): a node's ``cpus`` shared out over the run's ranks
    on that node, at least one."""
    return max(1, cpus // ranks_per_node(spec))


def omp_threads(spec: dict, accelerator: str, resources: dict) -> int:
    """Each rank's OMP_NUM_THREADS from the job's resources as the executor got them (after a
    profile's set-resources): gpu, ``cpus_per_gpu`` (threads per GPU, one rank per GPU); none, the
    task's ``cpus_per_task`` shared out over the ranks of a node."""
    if accelerator == "gpu":
        return max(1, int(resources["cpus_per_gpu"]))
    return rank_threads(spec, int(resources["cpus_per_task"]))


def launcher_argv(spec: dict, python: str | None = None) -> list[str]:
    """The launcher prefix for ``-m offloadbench.train ...`` of a resolved run spec: the one
    builder that the workflow, the benchmarks, the GPU check and the tests use. ``python`` is the
    interpreter (this one by default); torchrun is started as ``python -m torch.distributed.run``,
    which is what the ``torchrun`` script runs, so no PATH lookup can pick another environment's."""
    python = python or sys.executable
    ws, nodes = spec["world_size"], spec["num_nodes"]
    if nodes > 1:
        per_node = str(ranks_per_node(spec))
        return [
            *("srun", "--nodes", str(nodes), "--ntasks-per-node", "1", "--kill-on-bad-exit=1"),
            *(python, "-m", "offloadbench.launch", "--nnodes", str(nodes), "--nproc-per-node", per_node),
        ]
    if ws > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ws)]
    return [python]


def launcher_command(spec: dict, python: str = "python") -> str:
    """launcher_argv as one shell word list (for a Snakemake rule's shell command)."""
    return shlex.join(launcher_argv(spec, python))


def train_argv(spec: dict, data: str | Path, out: str | Path, python: str | None = None) -> list[str]:
    """The whole command of one training job, as the ``train`` rule runs it."""
    return [
        *launcher_argv(spec, python),
        *("-m", "offloadbench.train", "--spec", json.dumps(spec), "--data", str(data), "--out", str(out)),
    ]


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``gpu[01-04],gpu07`` -> ``gpu01``)."""
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    if not shutil.which("scontrol"):
        raise RuntimeError(f"cannot expand the Slurm node list {nodelist!r}: scontrol is not on PATH")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def torchrun_args(nnodes: int, nproc_per_node: int, env: dict) -> list[str]:
    """torchrun's options for one node of a multi-node Slurm job (every node computes the same)."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    job = env.get("SLURM_JOB_ID")
    if not nodelist or not job:
        raise RuntimeError("a multi-node run starts inside a Slurm allocation (SLURM_JOB_ID, SLURM_JOB_NODELIST)")
    port = RDZV_PORT_BASE + int(job) % 1000
    return [
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc_per_node}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={first_host(nodelist)}:{port}",
        f"--rdzv_id={job}",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m offloadbench.launch --nnodes N --nproc-per-node G -m offloadbench.train ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m offloadbench.launch", usage=main.__doc__)
    parser.add_argument("--nnodes", type=int, required=True)
    parser.add_argument("--nproc-per-node", type=int, required=True)
    if "-m" not in argv:
        parser.error("the training module goes after -m")
    split = argv.index("-m")
    opts = parser.parse_args(argv[:split])
    from torch.distributed.run import main as torchrun

    args = torchrun_args(opts.nnodes, opts.nproc_per_node, dict(os.environ))
    print("[offloadbench] torchrun", " ".join(args), file=sys.stderr, flush=True)
    torchrun([*args, *argv[split:]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
