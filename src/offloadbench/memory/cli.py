"""Predicted peak memory of a run per device (GPU, host, NVMe), beside what the run measured.

The command line of the memory model (python -m offloadbench.memory runs main; rule memory in
workflow/rules/memory.smk calls it once for every run of the profile, so that DeepSpeed, whose
estimate it gives beside its own for ZeRO-3 runs, is imported once, not once a run: ~10 s each
time on the 2-core machine):

    python -m offloadbench.memory --spec <json or path> --model-config <config.json> --block-size N \
        --summary results/runs/<run>/summary.json --out results/memory/<run>.json
    python -m offloadbench.memory --spec results/specs/a.json results/specs/b.json \
        --model-config <a's config> <b's config> --summary <a's> <b's> --out <a's> <b's>
    python -m offloadbench.memory --hardware-table --config configs/paper.yaml \
        --model-config configs/models/llama-3.1-8b.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import load_config
from ..io import write_json
from ..spec import load_spec
from .counting import load_model_config
from .estimate import estimate_profile
from .predict import compare, predict, predicted_disk_bytes
from .report import hardware_table
from .zero import deepspeed_estimate

# ---------------------------------------------------------------------------------------------
# The hardware table's time estimate, per run


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 5400 else f"{s / 60:.1f} min"


def time_table(profile: dict) -> str:
    """Markdown: estimate_profile's time per run (steps, the steps speed.py times, seconds per step
    and what bounds it, training, final evaluation, total) and the NVMe swap each run writes."""
    lines = [
        f"Estimated time per run on one {profile['gpu']}, one run after another (a **model estimate, not a "
        "measurement**; memory.estimate.estimate_profile). Timed steps: the logged steps speed.py judges "
        "(logging_steps apart, the first 2 left out; a speed verdict needs 5). Not included: downloads, the base "
        "model's evaluation, loading, saving, op compilation.",
        "",
        "| run | steps | timed steps | s/step (bound) | training | eval | total | NVMe swap written |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in profile["runs"].items():
        if not r["fits"]:
            lines.append(f"| {name} | {r['steps']} | — | — | — (OOM expected) | — | 0 | — |")
            continue
        ev = "—" if r["eval_seconds"] is None else f"{_hours(r['eval_seconds'])} ({r['eval_bound']})"
        lines.append(
            f"| {name} | {r['steps']} | {r['timed_steps']} | {r['step_seconds']:.1f} ({r['bound']}) | "
            f"{_hours(r['seconds'])} | {ev} | {_hours(r['total_seconds'])} | "
            f"{r['nvme_written_bytes'] / 2**40:.2f} TiB |"
        )
    lines.append(
        f"| **all runs** | | | | | | **{_hours(profile['seconds'])}** | "
        f"{profile['nvme_written_bytes'] / 2**40:.2f} TiB |"
    )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", nargs="+", help="resolved run spec(s) (JSON text or file): one result each")
    parser.add_argument(
        "--model-config",
        nargs="+",
        required=True,
        help="the model's config.json, its folder or a hub id (from the cache): one for every --spec or one for all",
    )
    parser.add_argument("--revision", help="hub revision of --model-config")
    parser.add_argument("--block-size", type=int, help="tokens per training example (default: each spec's)")
    parser.add_argument(
        "--summary", type=Path, nargs="+", help="each run's summary.json (measured values): one for every --spec"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: the summary's device, else cpu")
    parser.add_argument("--out", type=Path, nargs="+", help="where each run's comparison JSON goes")
    parser.add_argument("--hardware-table", action="store_true", help="print the Markdown table of --config's runs")
    parser.add_argument("--config", type=Path, help="profile merged onto configs/config.yaml (--hardware-table)")
    args = parser.parse_args(argv)
    if args.hardware_table:
        config = load_config(*([args.config] if args.config else []))
        model_config = load_model_config(args.model_config[0], args.revision)
        sys.stdout.write(hardware_table(config, model_config))
        sys.stdout.write("\n" + time_table(estimate_profile(config, model_config)))
        return 0
    if not (args.spec and args.out):
        parser.error("--spec and --out are required (or --hardware-table)")
    n = len(args.spec)
    for name, allowed in (("model_config", {1, n}), ("summary", {n}), ("out", {n})):
        given = getattr(args, name)
        if given is not None and len(given) not in allowed:
            parser.error(
                f"--{name.replace('_', '-')}: {len(given)} given for {n} --spec; give one for every --spec"
                + (" or one for all" if 1 in allowed else "")
            )
    models = args.model_config * n if len(args.model_config) == 1 else args.model_config
    summaries = args.summary or [None] * n
    configs: dict[str, dict] = {}  # runs of one model share its config
    for spec_arg, ref, summary_path, out in zip(args.spec, models, summaries, args.out, strict=True):
        if ref not in configs:
            configs[ref] = load_model_config(ref, args.revision)
        spec = load_spec(spec_arg)
        block_size = args.block_size or spec.get("block_size")
        if not block_size:
            parser.error(f"--block-size is required: the spec of run {spec.get('run')} names none")
        write_json(out, run_memory(spec, configs[ref], block_size, summary_path, args.device))
    return 0


def run_memory(spec: dict, model_config: dict, block_size: int, summary_path: Path | None, device: str | None) -> dict:
    """One run's results/memory/<run>.json: the prediction beside what it measured, DeepSpeed's
    estimate for ZeRO-3 runs, and the disk it needs."""
    summary = json.loads(summary_path.read_text()) if summary_path else {}
    device = device or summary.get("device") or "cpu"
    result = compare(predict(spec, model_config, block_size, device), summary)
    result["deepspeed_estimate"] = deepspeed_estimate(spec, model_config, device)
    result["disk"] = predicted_disk_bytes(spec, model_config, block_size, device)
    if summary.get("checkpoint_bytes") is not None:
        result["disk"]["final_model_measured"] = summary["checkpoint_bytes"]
    return result


if __name__ == "__main__":
    sys.exit(main())
