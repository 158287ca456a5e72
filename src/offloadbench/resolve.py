"""A run fully resolved before it starts: everything the training job needs that depends on the
model's shape or on the DeepSpeed config, computed once, upstream of training.

The ``resolve`` rule writes ``results/specs/<run>.json`` for every run; the ``train`` rule hands
that file to ``python -m offloadbench.train --spec``. The training code reads it as it is and
never imports the memory model. What is resolved here:

- ``deepspeed_config``: the run's DeepSpeed JSON (checked key by key at config time) with every
  ``"auto"`` filled as the HF Trainer fills it (batch keys, clipping, optimizer parameters, the
  bucket sizes from the model's hidden size; offloadbench.dsconfig.resolve_auto), our
  ``offload_param.buffer_size: "auto"`` with the model's largest tensor (every swapped tensor must
  fit one NVMe buffer), and ``nvme_path`` with the run's own swap folder inside nvme_dir
  (offloadbench.owned; the job creates it). Only ``fp16/bf16.enabled: "auto"`` stay for Trainer
  to fill on the machine the job runs on. These are the values DeepSpeed gets.
- ``disk``: the disk the run needs at its peak (NVMe swap files, final model, resume
  checkpoints), from the memory model; the training job compares it with the free space.
- ``locked_bytes``: the host memory DeepSpeed's NVMe swappers lock (mlock) as they set up, per
  device; a run that needs more than this machine lets a process lock is refused here, and the
  training job checks it again where it runs (a container's default limit is 8 MiB).
- ``launcher``: the command that starts the job (offloadbench.launch), for provenance.

A run whose DeepSpeed NVMe optimizer offload would train on stale gradients (DeepSpeed 0.19.8
reads some swapped gradients to a misaligned O_DIRECT address and never checks the result:
docs/nvme-divergence.md) is refused here, before it trains, naming the tensor and the fix.

    python -m offloadbench.resolve --spec '<run spec JSON>' --model-config results/models/<model> \
        --out results/specs/<run>.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import dsconfig, owned
from .env import exit_fast, lockable_bytes, locked_memory_problem
from .errors import PreflightError
from .io import write_json
from .launch import launcher_argv
from .memory.counting import load_model_config, meta_model, trainable_tensors
from .memory.predict import precision, predicted_disk_bytes
from .memory.zero import locked_swap_bytes, resolved_deepspeed, zero3_settings
from .nvme_check import nvme_optimizer_swap_problem
from .spec import load_spec

# The job may run on another machine than this step (a cluster node with GPUs), so the disk
# needs are given for either device; they differ in the dtype of the saved model only.
DEVICES = ("cpu", "cuda")


def resolve(spec: dict, model_config: dict) -> dict:
    """The spec with everything the training job needs resolved (keys RESOLVED_KEYS)."""
    ds = None
    if spec["deepspeed"]:  # its keys were checked with the config, before any job
        run_folder = Path("results", "runs", spec["run"])
        swap = owned.swap_dir(spec["nvme_dir"], spec["run"], run_folder) if spec["nvme_dir"] else None
        ds = resolved_deepspeed(spec, model_config, swap)
        check_nvme_optimizer(spec, ds, model_config)
    resolved = {**spec, "deepspeed_config": ds}
    disk = {device: predicted_disk_bytes(resolved, model_config, spec["block_size"], device) for device in DEVICES}
    z3 = zero3_settings(ds, model_config)
    locked = {
        device: locked_swap_bytes(z3, model_config, spec, precision(spec, device, True)["act"]) for device in DEVICES
    }
    # Which device the job gets is decided where it runs: refuse only what fails on either.
    why = locked_memory_problem(spec["run"], min(locked.values()), lockable_bytes())
    if why:
        raise PreflightError(why)
    return {
        **resolved,
        "disk": {device: {k: need[k] for k in ("nvme_swap", "total")} for device, need in disk.items()},
        "locked_bytes": locked,
        "launcher": launcher_argv(spec, python="python"),
    }


def trainable_shapes(spec: dict, model_config: dict) -> list[tuple[int, ...]]:
    """The trainable parameters' shapes in the order DeepSpeed gets them: model.parameters() of
    the model itself for full fine-tuning (built on the meta device); for adapters, the memory
    model's list of LoRA tensors (the same sizes, in PEFT's order layer by layer)."""
    if spec["method"] == "full":
        return [tuple(p.shape) for p in meta_model(model_config).parameters() if p.requires_grad]
    return [(n,) for n in trainable_tensors(model_config, spec)]


def check_nvme_optimizer(spec: dict, ds: dict, model_config: dict) -> None:
    off = (ds.get("zero_optimization") or {}).get("offload_optimizer") or {}
    if off.get("device") != "nvme":
        return
    why = nvme_optimizer_swap_problem(trainable_shapes(spec, model_config), ds, spec["world_size"])
    if why:
        raise PreflightError(f"run {spec['run']}: {spec['deepspeed']}: {why}")


def resolve_spec(spec: dict) -> dict:
    """:func:`resolve` with the spec's own model config (a model folder, or a hub id in the cache)."""
    return resolve(spec, load_model_config(spec["model"]["path"], spec["model"].get("revision")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.resolve", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="run spec (JSON text or file)")
    parser.add_argument("--model-config", required=True, help="model folder, config.json or hub id")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        resolved = resolve(load_spec(args.spec), load_model_config(args.model_config, args.revision))
    except (PreflightError, dsconfig.DeepSpeedConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_json(args.out, resolved)
    return 0


if __name__ == "__main__":
    exit_fast(main())
