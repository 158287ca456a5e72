"""Offload mechanisms of a run and where each kind of state lives.

- training.optimizer paged_adamw_*: bitsandbytes' paged AdamW (state in CUDA managed memory).
- training.activation_offload: saved activations live in host memory (``save_on_cpu``).
- deepspeed: a ZeRO config; its ``offload_param`` / ``offload_optimizer`` sections move
  parameters and optimizer state to CPU memory or NVMe. The config arrives resolved in the run's
  spec (offloadbench.resolve); only the NVMe swap folder is filled in here, because it is created
  by the job itself, inside the user's nvme_dir (offloadbench.owned).
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import torch

from .. import owned
from ..errors import PreflightError
from ..io import write_json
from .world import world


def deepspeed_config(spec: dict, out: Path) -> dict | None:
    """The run's resolved DeepSpeed config with its own NVMe swap folder filled in."""
    if "deepspeed_config" not in spec:
        raise PreflightError(
            f"run {spec['run']}: the spec is not resolved (no deepspeed_config); the train rule reads "
            "results/specs/<run>.json, written by python -m offloadbench.resolve"
        )
    ds = copy.deepcopy(spec["deepspeed_config"])
    if ds is None:
        return None
    zero = ds.get("zero_optimization", {})
    for section in ("offload_param", "offload_optimizer"):
        off = zero.get(section) or {}
        if off.get("device") == "nvme":
            off["nvme_path"] = str(claim_swap_dir(spec, out))
    return ds


def claim_swap_dir(spec: dict, out: Path) -> Path:
    """Create (or, on a resume, take back) the run's swap folder inside nvme_dir; rank 0 leaves a
    pointer to it in the run folder so that `make clean-results` finds it wherever it is."""
    try:
        swap = owned.claim(owned.swap_dir(spec["nvme_dir"], spec["run"], out), _owner(spec, out), "nvme_dir")
    except owned.OwnershipError as err:
        raise PreflightError(f"run {spec['run']}: {err}") from err
    if world()[0] == 0:
        write_json(out / owned.SWAP_POINTER, {"path": str(swap)})
    return swap


def _owner(spec: dict, out: Path) -> dict:
    return owned.owner_record(spec["run"], out)


def release_swap_dir(spec: dict, out: Path) -> None:
    """After a successful run: remove the swap folder this run created, and only that. Every node
    removes its own (nvme_dir is a local disk), once all ranks are done with it."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        swap = owned.swap_dir(spec["nvme_dir"], spec["run"], out)
        if not owned.remove_owned(swap, _owner(spec, out)):
            print(f"[offloadbench] left {swap} in place: it is not marked as this run's", file=sys.stderr)
    if world()[0] == 0:
        (out / owned.SWAP_POINTER).unlink(missing_ok=True)


def offload_label(spec: dict, ds: dict | None) -> dict:
    """Where each kind of state lives: none, cpu, nvme, or paged (bitsandbytes managed memory)."""
    zero = (ds or {}).get("zero_optimization", {})
    opt = (zero.get("offload_optimizer") or {}).get("device", "none")
    if spec["training"]["optimizer"].startswith("paged_"):
        opt = "paged"
    return {
        "params": (zero.get("offload_param") or {}).get("device", "none"),
        "optimizer": opt,
        "activations": "cpu" if spec["training"]["activation_offload"] else "none",
    }


def offload_summary(off: dict) -> str:
    parts = [f"{k}:{v}" for k, v in off.items() if v != "none"]
    return "+".join(parts) if parts else "none"
