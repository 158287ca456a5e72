"""Offload keeps the math: every run with an offload mechanism against its twin without it.

An offload mechanism (ZeRO-3 parameter or optimizer offload to CPU or NVMe, a paged optimizer,
activations kept in host memory) should move state, not change what is computed. So each run that
has one is compared, logged step by logged step, with its *twin*: the run of the same profile whose
resolved spec is the same once every offload setting is taken out (``without_offload``). In fp32
on a CPU the two train the same model up to the rounding of a different summation order; a larger
difference means the mechanism changed the training, as DeepSpeed's NVMe optimizer swapper did on
some shapes (docs/nvme-divergence.md).

The aggregate step shows each run's agreement in the tables, and the claim check ``twins_agree``
FAILs on a run that departs. Tolerances are per compute dtype (config key ``twins.tolerance``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

# DeepSpeed keys that schedule communication and memory but do not change what is computed (a
# different bucket can change the summation order, which is rounding, inside the tolerance).
SCHEDULING_KEYS = (
    "stage3_param_persistence_threshold",
    "stage3_prefetch_bucket_size",
    "stage3_max_live_parameters",
    "stage3_max_reuse_distance",
    "reduce_bucket_size",
    "allgather_bucket_size",
    "sub_group_size",
    "overlap_comm",
    "contiguous_gradients",
)
# One algorithm, several implementations: bitsandbytes' 32-bit AdamW (paged or not) and torch's
# AdamW, tensor by tensor or fused, compute the same update.
ADAMW = {"paged_adamw_32bit": "adamw", "adamw_torch": "adamw", "adamw_torch_fused": "adamw"}


def offloads(spec: dict) -> list[str]:
    """The offload mechanisms a resolved run spec configures, e.g. ['params:cpu', 'optimizer:nvme']."""
    out = []
    zero = (spec.get("deepspeed_config") or {}).get("zero_optimization") or {}
    for kind, key in (("params", "offload_param"), ("optimizer", "offload_optimizer")):
        device = (zero.get(key) or {}).get("device", "none")
        if device not in (None, "none"):
            out.append(f"{kind}:{device}")
    if spec["training"]["optimizer"].startswith("paged_"):
        out.append("optimizer:paged")
    if spec["training"]["activation_offload"]:
        out.append("activations:cpu")
    return out


def without_offload(spec: dict) -> dict:
    """The spec with every offload setting (and the run's name and paths) taken out."""
    s = copy.deepcopy(spec)
    for key in ("run", "repeat_of", "deepspeed", "nvme_dir", "disk", "locked_bytes"):
        s.pop(key, None)
    ds = s.get("deepspeed_config")
    if ds:
        ds.pop("aio", None)
        # DeepSpeed's own AdamW is what optimizer offload needs (DeepSpeedCPUAdam); with the same
        # lr, betas, eps and weight decay (resolved from training) it is the Trainer's AdamW.
        ds.pop("optimizer", None)
        zero = ds.get("zero_optimization") or {}
        for key in ("offload_param", "offload_optimizer", *SCHEDULING_KEYS):
            zero.pop(key, None)
    training = s["training"]
    training["activation_offload"] = False
    training["optimizer"] = ADAMW.get(training["optimizer"], training["optimizer"])
    return s


def find_twins(specs: dict[str, dict]) -> dict[str, str | None]:
    """For each run with an offload mechanism, the run without any whose spec is otherwise the same
    (None when the profile has no such run)."""
    plain = {run: json.dumps(without_offload(s), sort_keys=True) for run, s in specs.items() if not offloads(s)}
    twins = {}
    for run, spec in specs.items():
        if offloads(spec):
            key = json.dumps(without_offload(spec), sort_keys=True)
            twins[run] = next((other for other, k in plain.items() if k == key), None)
    return twins


def losses(run_dir: Path) -> dict[int, float]:
    path = run_dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return {r["step"]: r["loss"] for r in rows if r.get("loss") is not None}


def agreement(run: str, twin: str | None, summaries: dict[str, dict | None], runs_dir: Path, tolerance: dict) -> dict:
    """How closely ``run`` followed its twin: the largest train-loss difference at a logged step,
    the first step beyond the tolerance, the eval-loss difference, and a verdict (agrees, departs,
    no twin, not run)."""
    mine = summaries.get(run)
    out = {"run": run, "twin": twin, "offload": offloads(run_spec(mine)) if mine else None}
    if twin is None:
        return {**out, "verdict": "no twin", "note": "no run of this profile is the same without the offload"}
    theirs = summaries.get(twin)
    unfinished = [r for r, s in ((run, mine), (twin, theirs)) if s is None or s["status"] != "ok"]
    if unfinished:
        return {**out, "verdict": "not run", "note": f"did not finish: {', '.join(unfinished)}"}
    dtype = mine["dtype"]
    if dtype != theirs["dtype"]:
        return {**out, "verdict": "departs", "note": f"trained in {dtype}, its twin in {theirs['dtype']}"}
    tol = tolerance.get(dtype)
    if tol is None:
        return {**out, "verdict": "not run", "note": f"no twins.tolerance for {dtype}; add one to the config"}
    a, b = losses(runs_dir / run), losses(runs_dir / twin)
    out.update({"dtype": dtype, "tolerance": tol, "steps": len(a)})
    if not a or sorted(a) != sorted(b):
        note = f"logged steps differ: {len(a)} here, {len(b)} for {twin}"
        return {**out, "verdict": "departs", "note": note}
    diffs = {step: abs(a[step] - b[step]) for step in sorted(a)}
    worst = max(diffs, key=diffs.get)
    beyond = [step for step, d in diffs.items() if d > tol]
    eval_diff = abs(mine["eval_loss"] - theirs["eval_loss"])
    out.update(
        {
            "max_loss_diff": diffs[worst],
            "at_step": worst,
            "first_departure_step": beyond[0] if beyond else None,
            "eval_loss_diff": eval_diff,
        }
    )
    if beyond or eval_diff > tol:
        where = f"from step {beyond[0]}" if beyond else "in eval loss"
        note = (
            f"departs {where}: largest train-loss difference {diffs[worst]:.2e} at step {worst}, eval {eval_diff:.2e}"
        )
        return {**out, "verdict": "departs", "note": note + f" (tolerance {tol:g}, {dtype})"}
    note = f"largest train-loss difference {diffs[worst]:.1e} (step {worst}), eval {eval_diff:.1e}; tolerance {tol:g}"
    return {**out, "verdict": "agrees", "note": note}


def load_summaries(runs: list[str], runs_dir: Path) -> dict[str, dict | None]:
    out = {}
    for run in runs:
        path = runs_dir / run / "summary.json"
        out[run] = json.loads(path.read_text()) if path.is_file() else None
    return out


def run_spec(summary: dict) -> dict:
    """The run's spec with the DeepSpeed config that was in effect (summary.deepspeed_config)."""
    return {**summary["spec"], "deepspeed_config": summary.get("deepspeed_config")}


def compare_twins(runs: list[str], runs_dir: Path, tolerance: dict) -> dict[str, dict]:
    """Every offload run's agreement with its twin, by run (runs without offload are absent)."""
    summaries = load_summaries(runs, runs_dir)
    specs = {run: run_spec(s) for run, s in summaries.items() if s is not None and "spec" in s}
    return {run: agreement(run, twin, summaries, runs_dir, tolerance) for run, twin in find_twins(specs).items()}
