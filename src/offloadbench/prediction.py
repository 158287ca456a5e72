"""What each claim is predicted to show on the paper's hardware, beside what this machine measured.

A reviewer on a CPU-only machine sees C1 and C3 N/A: no accelerator memory was measured. Beside
every measured verdict, claims.md therefore gives the verdict the memory model predicts for a GPU
profile (config key ``prediction``: the paper profile and its model's config.json) on one H100
80GB: each run's predicted peaks (offloadbench.memory.predict) and estimated time
(memory.estimate.estimate_time, an assumed MFU and bandwidths) stand in for its summary, and the
claim's own check and factor decide. It is a prediction, labelled so everywhere, and never replaces
a measured verdict. Claims about what training produces (perplexity, twins) are not predicted.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import load_config
from .memory.estimate import H100, estimate_time
from .memory.measured import CUDA_CONTEXT_BYTES, gpu_needed
from .memory.predict import predict
from .spec import declared_runs, repo_path, run_spec

# Summary keys the memory model predicts, from a run's prediction (bytes; tokens/s).
PREDICTED_METRICS = {
    "gpu_allocated_peak_bytes": lambda p: p["gpu"],
    "gpu_reserved_peak_bytes": lambda p: p["gpu"],
    "gpu_nvml_used_peak_bytes": lambda p: p["gpu"] + CUDA_CONTEXT_BYTES,  # the CUDA context is in NVML's count
    "host_rss_above_baseline_bytes": lambda p: p["host"],  # the model predicts above the runtime
    "tokens_per_s": lambda p: p["tokens_per_s"],
}


def predicted_runs(config: dict, model_config: dict, gpu: dict = H100) -> dict[str, dict]:
    """Per run of the profile: predicted GPU (training and load) and host peaks, whether it fits
    ``gpu`` (status ok or oom: the larger of the load and training peaks, with the CUDA context) and
    the estimated tokens/s of a run that fits."""
    out = {}
    for name in declared_runs(config):
        spec = run_spec(config, name)
        block = spec["block_size"]
        pred = predict(spec, model_config, block, "cuda")
        peaks = pred["predicted"]
        fits = gpu_needed(pred) <= gpu["memory_bytes"]  # loading as well as training
        tr = spec["training"]
        tokens = tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * spec["world_size"] * block
        seconds = estimate_time(spec, model_config, block, gpu)["seconds"] / tr["max_steps"]
        out[name] = {
            "status": "ok" if fits else "oom",
            "gpu": peaks["gpu"]["total"],
            "gpu_load": pred["predicted_load"]["gpu"],
            "host": peaks["host"]["total"],
            "tokens_per_s": tokens / seconds if fits else None,
        }
    return out


def predict_claim(claim: dict, runs: dict[str, dict], labels: dict[str, str] | None = None) -> dict:
    """The verdict the predicted runs give a claim: {"verdict", "reason"} (verdict None: the claim
    is not one the memory model can predict, or the profile lacks its runs). ``labels``: readable
    names of the summary keys, for the reason."""
    labels = labels or {}
    if claim["check"] not in ("at_most", "oom_vs_ok"):
        return {"verdict": None, "reason": "not predicted: it depends on what training produces"}
    names = [claim["run"], *claim["against"]]
    if missing := [r for r in names if r not in runs]:
        return {"verdict": None, "reason": f"not predicted: the predicted profile has no run {', '.join(missing)}"}
    mine = runs[claim["run"]]
    if claim["check"] == "oom_vs_ok":
        ooms = [r for r in claim["against"] if runs[r]["status"] == "oom"]

        def fit(r: str) -> str:
            gib = max(runs[r]["gpu"], runs[r].get("gpu_load", 0)) / 2**30
            return f"{r} {'fits' if runs[r]['status'] == 'ok' else 'would not fit'} ({gib:.1f} GiB)"

        said = "; ".join(fit(r) for r in names)
        ok = mine["status"] == "ok" and len(ooms) == len(claim["against"])
        return {"verdict": "PASS" if ok else "FAIL", "reason": said}
    if mine["status"] != "ok":
        return {"verdict": "FAIL", "reason": f"{claim['run']} is predicted not to fit"}
    ratios, failures = [], []
    for metric in claim["metrics"]:
        for other in claim["against"]:
            if runs[other]["status"] == "oom":
                if metric != "tokens_per_s":  # needing more than the card has satisfies "less memory"
                    ratios.append(f"{other} would not fit")
                continue
            value, ref = PREDICTED_METRICS[metric](mine), PREDICTED_METRICS[metric](runs[other])
            ratio = value / ref if ref else float("inf")
            ratios.append(f"{labels.get(metric, metric)} {ratio:.2f}x {other}'s")
            if ratio > claim["factor"]:
                failures.append(other)
    verdict = "FAIL" if failures else "PASS"
    return {"verdict": verdict, "reason": f"needs at most {claim['factor']}x: " + "; ".join(ratios)}


def predict_claims(
    claims: list[dict], profile: str | Path, model_config: str | Path, labels: dict | None = None, gpu: dict = H100
) -> dict:
    """Every claim's predicted verdict for ``profile`` (a config file merged onto the default one)
    on ``gpu``, with what the prediction is of."""
    config = load_config(repo_path(str(profile)))
    runs = predicted_runs(config, json.loads(Path(repo_path(str(model_config))).read_text()), gpu)
    label = f"{config['profile']} profile on one {gpu['name']}, predicted by the memory model"
    return {"for": label, "claims": {c["id"]: predict_claim(c, runs, labels) for c in claims}}
