"""A run's life cycle around the training itself: disk check before it loads, resume points after
a kill, metrics published when it ends, and the summary (ok, failed or oom) with its provenance."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from ..env import choose_dtype, git_commit, hardware, lockable_bytes, locked_memory_problem, versions
from ..errors import PreflightError
from ..io import write_json, write_text
from ..spec import config_spec, spec_sha256
from .offload import offload_label, offload_summary
from .world import world


def check_locked_memory(spec: dict, device: str) -> None:
    """Refuse an NVMe run whose swap buffers this process may not lock, before the model loads:
    DeepSpeed would abort inside its set-up (spec.locked_bytes, resolved from the memory model)."""
    why = locked_memory_problem(spec["run"], (spec.get("locked_bytes") or {}).get(device, 0), lockable_bytes())
    if why:
        raise PreflightError(why)


def check_disk(spec: dict, out: Path, device: str) -> None:
    """Refuse a run whose NVMe swap files and checkpoints exceed the free disk, before the model
    loads. The bytes were predicted when the run was resolved (spec.disk, from the memory model)."""
    need = spec["disk"][device]
    places: dict[int, list] = {}  # filesystem -> [folder, bytes needed, what]
    for folder, nbytes, what in (
        (out, need["total"] - need["nvme_swap"], "final model and resume checkpoints"),
        (Path(spec["nvme_dir"]) if need["nvme_swap"] else None, need["nvme_swap"], "NVMe swap files"),
    ):
        if folder is None:
            continue
        existing = folder
        while not existing.exists():
            existing = existing.parent
        entry = places.setdefault(os.stat(existing).st_dev, [existing, 0, []])
        entry[1] += nbytes
        entry[2].append(f"{what} {nbytes / 2**30:.2f} GiB")
    for folder, nbytes, what in places.values():
        free = shutil.disk_usage(folder).free
        if nbytes > free:
            raise PreflightError(
                f"run {spec['run']}: needs about {nbytes / 2**30:.2f} GiB of disk on the filesystem of {folder} "
                f"({', '.join(what)}) but only {free / 2**30:.2f} GiB is free; free space, move nvme_dir or "
                "results/ to a larger disk, or raise training.save_steps (fewer resume checkpoints)"
            )


def last_checkpoint(out: Path) -> str | None:
    """The newest complete resume point, or None; incomplete ones (a kill while saving) go.

    Trainer writes trainer_state.json last, so a checkpoint whose state file parses is complete.
    """
    ckpt_dir = out / "checkpoints"
    found = (
        sorted(
            (int(p.name.split("-")[-1]), p) for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()
        )
        if ckpt_dir.is_dir()
        else []
    )
    for _, path in reversed(found):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, json.JSONDecodeError):
            print(f"[offloadbench] removing incomplete checkpoint {path}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
    return None


def publish_metrics(out: Path) -> None:
    """Copy the metrics written during training to OUT/metrics.jsonl, atomically."""
    partial = out / "checkpoints" / "metrics.jsonl"
    write_text(out / "metrics.jsonl", partial.read_text() if partial.exists() else "")


def trim_metrics(path: Path, upto_step: int) -> None:
    """Drop metric lines after the checkpoint we resume from (they are logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= upto_step]
    path.write_text("".join(line + "\n" for line in keep))


MEASURED = (
    "params_total",
    "params_trainable",
    "steps",
    "tokens_seen",
    "train_s",
    "startup_s",
    "setup_s",
    "recorder_cost",
    "tokens_per_s",
    "recorder",
    "train_batch_size",
    "host_rss_baseline_bytes",
    "host_rss_peak_bytes",
    "host_rss_above_baseline_bytes",
    "host_locked_peak_bytes",
    "gpu_allocated_peak_bytes",
    "gpu_reserved_peak_bytes",
    "gpu_nvml_used_peak_bytes",
    "gpu_load_allocated_peak_bytes",
    "gpu_load_reserved_peak_bytes",
    "gpu_load_nvml_used_peak_bytes",
    "host_rss_load_peak_bytes",
    "nvme_bytes_written",
    "train_loss_final",
    "eval_loss",
    "eval_ppl",
    "checkpoint_bytes",
    "optimizer_fallback",
    "resumed_from",
    "error",
    "rng",
    "ranks",
    "observed",
    "offload_observed",
    "deepspeed_config",
    "libraries",
    "threads",
)


def summary_record(spec: dict, **fields) -> dict:
    """summary.json (workflow/schemas/summary.schema.json): what was measured, plus provenance.

    Fields not given (a run that failed before measuring them) are null. ``spec`` is the run's
    spec as the config step made it (without what offloadbench.resolve added), so its hash is the
    config's."""
    off = fields.pop("offload")
    return {
        "run": spec["run"],
        "method": spec["method"],
        "offload": offload_summary(off),
        "offload_detail": off,
        "model": spec["model"]["path"],
        "dataset": spec["dataset"],
        "seed": spec["seed"],
        "optimizer": spec["training"]["optimizer"],
        **{key: None for key in MEASURED},
        **fields,
        "config_sha256": spec_sha256(spec),
        "git_commit": git_commit(),
        "versions": versions(),
        "hardware": hardware(),
        "spec": spec,
    }


def out_of_memory(err: BaseException) -> str | None:
    """Which memory ran out: "oom" for the accelerator's (torch.OutOfMemoryError, CUDA's message),
    "host_oom" for host memory (MemoryError, the CPU allocator, pinned host buffers), None when the
    error is not about memory. The claims read "oom" as "needs more than the accelerator has", so a
    host that ran out must never be recorded as it."""
    text = str(err).lower()
    if isinstance(err, torch.OutOfMemoryError) or "cuda out of memory" in text or "cuda error: out of memory" in text:
        return "oom"
    if isinstance(err, MemoryError) or "can't allocate memory" in text or "out of memory" in text:
        return "host_oom"
    return None


def record_failure(spec: dict, out: Path, err: BaseException, wall_s: float) -> dict:
    """A run that failed while training: summary.json says so (status oom, host_oom or failed, and
    the error), so the tables show the row instead of dropping it and the workflow goes on."""
    device, dtype_name = choose_dtype(spec["training"]["dtype"])
    summary = summary_record(
        config_spec(spec),
        status=out_of_memory(err) or "failed",
        error=f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000],
        offload=offload_label(spec, spec.get("deepspeed_config")),
        device=device,
        dtype=dtype_name,
        world_size=spec["world_size"],
        wall_s=wall_s,
    )
    if world()[0] == 0:
        out.mkdir(parents=True, exist_ok=True)
        publish_metrics(out)  # the steps it made before failing
        write_json(out / "summary.json", summary)
    return summary


@contextlib.contextmanager
def phase(name: str):
    """Log how long each phase of a job takes (start-up, training, evaluation, saving)."""
    t0 = time.perf_counter()
    print(f"[offloadbench] {name} ...", file=sys.stderr, flush=True)
    yield
    print(f"[offloadbench] {name} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
