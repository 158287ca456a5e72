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
- ``launcher``: the command that starts the job (offloadbench.launch), for provenance.

    python -m offloadbench.resolve --spec '<run spec JSON>' --model-config results/models/<model> \
        --out results/specs/<run>.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import dsconfig, owned
from .io import write_json
from .launch import launcher_argv
from .memory.counting import largest_tensor, load_model_config
from .memory.predict import predicted_disk_bytes
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
        ds = dsconfig.resolve_auto(
            dsconfig.read(spec["deepspeed"]),
            hidden_size=model_config.get("hidden_size"),
            training=spec["training"],
            world_size=spec["world_size"],
            dtype=None,
            largest_tensor=largest_tensor(model_config),
            nvme_dir=swap,
        )
    resolved = {**spec, "deepspeed_config": ds}
    disk = {device: predicted_disk_bytes(resolved, model_config, spec["block_size"], device) for device in DEVICES}
    return {
        **resolved,
        "disk": {device: {k: need[k] for k in ("nvme_swap", "total")} for device, need in disk.items()},
        "launcher": launcher_argv(spec, python="python"),
    }


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
    write_json(args.out, resolve(load_spec(args.spec), load_model_config(args.model_config, args.revision)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
