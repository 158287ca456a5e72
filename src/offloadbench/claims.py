"""Check the paper's claims (configs/claims.yaml) against the run summaries.

    python -m offloadbench.claims --claims configs/claims.yaml --runs-dir results/runs \
        --base results/eval/base.json --profile default --out results/claims.json

Each claim gets PASS, FAIL or N/A and the numbers it used (workflow/schemas/claims.schema.json);
results/claims.md says the same for a reader. N/A is for claims these runs cannot test: accelerator
memory on runs without an accelerator, runs the profile does not have, runs that failed. With
--predict, each claim also gets the verdict the memory model predicts for a GPU profile
(offloadbench.prediction), labelled as a prediction.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from . import speed
from .claims_file import load_claims
from .claims_page import LABELS, to_html, to_markdown
from .io import write_json, write_text
from .memory.counting import load_model_config
from .memory.measured import gpu_needed
from .memory.predict import predict
from .prediction import predict_claims
from .spec import load_spec
from .twins import compare_twins

GPU_METRICS = ("gpu_allocated_peak_bytes", "gpu_reserved_peak_bytes", "gpu_nvml_used_peak_bytes")
# Judged on each run's steps with their spread (speed.py), not on one number per run.
SPEED_METRICS = {"tokens_per_s"}


def _load(runs_dir: Path, runs: list[str]) -> dict[str, dict | None]:
    out = {}
    for run in runs:
        path = runs_dir / run / "summary.json"
        out[run] = json.loads(path.read_text()) if path.is_file() else None
    return out


def _unavailable(summaries: dict[str, dict | None], need_ok: bool = True) -> str | None:
    """Why these runs cannot test a claim, or None if they can."""
    missing = [r for r, s in summaries.items() if s is None]
    if missing:
        return f"no results for {', '.join(missing)} (not in this profile, or not run)"
    if need_ok:
        failed = [f"{r} ({s['status']})" for r, s in summaries.items() if s["status"] != "ok"]
        if failed:
            return f"did not finish: {', '.join(failed)}"
    return None


def check_at_most(claim: dict, runs_dir: Path) -> tuple[str, str, dict]:
    """`run`'s metrics at most factor x each reference's. A reference that ran out of accelerator
    memory needed more than the accelerator has, which satisfies a memory comparison."""
    summaries = _load(runs_dir, [claim["run"], *claim["against"]])
    if why := _unavailable(summaries, need_ok=False):
        return "N/A", why, {}
    memory_only = all(m in GPU_METRICS for m in claim["metrics"])
    if any(m in GPU_METRICS for m in claim["metrics"]):
        cpu = [r for r, s in summaries.items() if s["device"] != "cuda"]
        if cpu:
            return "N/A", f"no accelerator memory was measured: {', '.join(cpu)} ran on the CPU", {}
    if claim.get("offload_cost") and (why := no_transfer(claim["run"], summaries)):
        return "N/A", why, {}
    usable = {claim["run"]: summaries[claim["run"]]}
    oom_refs = [r for r in claim["against"] if summaries[r]["status"] == "oom" and memory_only]
    usable.update({r: summaries[r] for r in claim["against"] if r not in oom_refs})
    if why := _unavailable(usable):
        return "N/A", why, {}
    numbers, failures, undecided, passed = {}, [], [], []
    for metric in claim["metrics"]:
        mine = summaries[claim["run"]].get(metric)
        for other in claim["against"]:
            key = f"{metric}: {claim['run']} / {other}"
            if other in oom_refs:
                numbers[key] = {claim["run"]: mine, other: "oom"}
                continue
            if metric in SPEED_METRICS:
                mine_rates, other_rates = (
                    speed.steady_rates(runs_dir / claim["run"]),
                    speed.steady_rates(runs_dir / other),
                )
                judged = speed.judge_at_most(mine_rates, other_rates, claim["factor"])
                if "ratio" not in judged:
                    undecided.append(f"{LABELS[metric]} of {claim['run']} and {other}: {judged['why']}")
                    continue
                low, high = judged["low"], judged["high"]
                numbers[key] = {
                    f"{claim['run']} median": statistics.median(mine_rates),
                    f"{other} median": statistics.median(other_rates),
                    "ratio": judged["ratio"],
                    "95% interval": f"{low:.3f}–{high:.3f}",
                    "steps": judged["n"],
                }
                said = f"{LABELS[metric]} of {claim['run']} is {judged['ratio']:.2f}x {other}'s"
                said += f" (95% interval {low:.2f}–{high:.2f})"
                if judged["verdict"] == "FAIL":
                    failures.append(said)
                elif judged["verdict"] == "undecided":
                    undecided.append(said)
                else:
                    passed.append(said)
                continue
            ref = summaries[other].get(metric)
            if mine is None or ref is None:
                return "N/A", f"{LABELS.get(metric, metric)} was not recorded for {claim['run']} or {other}", numbers
            ratio = mine / ref if ref else float("inf")
            numbers[key] = {claim["run"]: mine, other: ref, "ratio": ratio}
            said = f"{LABELS.get(metric, metric)} of {claim['run']} is {ratio:.2f}x {other}'s"
            (failures if ratio > claim["factor"] else passed).append(said)
    limit = f"at most {claim['factor']}x"
    if failures:
        return "FAIL", f"needs {limit}; " + "; ".join(failures), numbers
    if undecided:
        return (
            "N/A",
            f"needs {limit} beyond the spread of the steps (first {speed.WARMUP_STEPS} left out), and "
            + "; ".join(undecided)
            + ": inside the measured spread, so neither PASS nor FAIL",
            numbers,
        )
    oom_note = f" ({', '.join(oom_refs)} ran out of accelerator memory)" if oom_refs else ""
    spread_note = (
        f"; speed beyond the 95% interval of the steps (first {speed.WARMUP_STEPS} left out)"
        if SPEED_METRICS & set(claim["metrics"])
        else ""
    )
    return "PASS", f"every ratio is {limit}{oom_note}{spread_note}: " + "; ".join(passed), numbers


def no_transfer(run: str, summaries: dict[str, dict]) -> str | None:
    """Why a claim about the cost of offload cannot be tested here, or None: the runs trained on a
    CPU (the offloaded state stays in the same memory: there is no host-device copy to cost), or
    `run`'s offload did not take effect (summary.observed)."""
    cpu = [r for r, s in summaries.items() if s["device"] != "cuda"]
    if cpu:
        return (
            f"no host-device copy to measure: {', '.join(cpu)} ran on the CPU, where offloaded state stays in "
            "host memory (a speed difference there is the offload machinery's, not a transfer's)"
        )
    seen = summaries[run].get("offload_observed")
    if seen == "none":
        return f"{run}'s offload did not take effect (observed: none; configured: {summaries[run]['offload']})"
    return None


def predicted_fit(claim: dict, summaries: dict[str, dict]) -> tuple[str, dict]:
    """The memory model's side of a fit claim: each run's predicted accelerator peak (as if on CUDA)
    against the accelerator's memory (the measured GPU's, else the claim's accelerator_gib)."""

    gpu_bytes = next((s["hardware"].get("gpu_memory_bytes") for s in summaries.values() if s["device"] == "cuda"), None)
    limit = gpu_bytes or claim.get("accelerator_gib", 80) * 2**30
    numbers = {"accelerator_bytes": limit}
    for run, s in summaries.items():
        spec = s["spec"]
        model_config = load_model_config(spec["model"]["path"], spec["model"].get("revision"))
        # loading and training, with the CUDA context: the rule prediction.py and the hardware table use
        numbers[f"{run}: predicted accelerator bytes"] = gpu_needed(
            predict(spec, model_config, spec["block_size"], "cuda")
        )
    fits = {r: numbers[f"{r}: predicted accelerator bytes"] <= limit for r in summaries}
    gib = f"{limit / 2**30:.0f} GiB"
    # "this profile's": the claims page also shows the paper profile's prediction beside it
    said = "predicted for this profile's models"
    if fits[claim["run"]] and not any(fits[r] for r in claim["against"]):
        return f"{said}: {claim['run']} fits {gib}, {', '.join(claim['against'])} would not", numbers
    too_small = [r for r in claim["against"] if fits[r]]
    if too_small:
        return (
            f"{said}: {', '.join(too_small)} already fits {gib}, so this profile gives offload nothing to rescue",
            numbers,
        )
    return f"{said}: {claim['run']} would not fit {gib} either", numbers


def check_oom_vs_ok(claim: dict, runs_dir: Path) -> tuple[str, str, dict]:
    """Measured: `run` finished where every run in `against` ran out of accelerator memory. The
    memory model's prediction is reported beside it (and decides nothing on its own)."""
    summaries = _load(runs_dir, [claim["run"], *claim["against"]])
    if why := _unavailable(summaries, need_ok=False):
        return "N/A", why, {}
    try:
        predicted, numbers = predicted_fit(claim, summaries)
    except (OSError, KeyError, ValueError) as err:  # no model config at hand: measured side only
        predicted, numbers = f"no prediction ({type(err).__name__}: {err})", {}
    cpu = [r for r, s in summaries.items() if s["device"] != "cuda"]
    if cpu:
        why = f"whether it fits an accelerator cannot be measured: {', '.join(cpu)} ran on the CPU; {predicted}"
        return "N/A", why, numbers
    numbers.update({r: s["status"] for r, s in summaries.items()})
    mine = summaries[claim["run"]]["status"]
    host = [r for r in claim["against"] if summaries[r]["status"] == "host_oom"]
    if host and mine == "ok":  # the machine's host memory stopped it first: the card was not tested
        why = f"{', '.join(host)} ran out of host memory, not accelerator memory; {predicted}"
        return "N/A", why, numbers
    ooms = [r for r in claim["against"] if summaries[r]["status"] == "oom"]
    if mine == "ok" and len(ooms) == len(claim["against"]):
        why = f"{claim['run']} finished while {', '.join(ooms)} ran out of accelerator memory; {predicted}"
        return "PASS", why, numbers
    statuses = ", ".join(f"{r}: {numbers[r]}" for r in claim["against"])
    return "FAIL", f"{claim['run']}: {mine}; {statuses}; {predicted}", numbers


def check_below_base(claim: dict, runs_dir: Path, base: dict | None, all_runs: list[str]) -> tuple[str, str, dict]:
    if base is None:
        return "N/A", "the base model was not evaluated", {}
    runs = all_runs if claim["runs"] == "all" else claim["runs"]
    summaries = _load(runs_dir, runs)
    if why := _unavailable(summaries):
        return "N/A", why, {}
    # "all": the runs that fine-tune the base model; a run of another model size (model_size) starts
    # from another model, which the base model's evaluation says nothing about.
    others = [
        r
        for r, s in summaries.items()
        if claim["runs"] == "all" and (s.get("spec") or {}).get("model_size", "base") != "base"
    ]
    summaries = {r: s for r, s in summaries.items() if r not in others}
    note = f"; {', '.join(others)}: another model size, not compared with the base model" if others else ""
    metric, least = claim["metric"], claim.get("min_drop", 0.0)
    label = LABELS.get(metric, metric)
    drops = {r: 1 - s[metric] / base[metric] for r, s in summaries.items()}
    numbers = {"base": base[metric], **{r: {metric: s[metric], "drop": drops[r]} for r, s in summaries.items()}}
    low, high = min(drops, key=drops.get), max(drops, key=drops.get)
    sizes = f"drops from {drops[low]:.1%} ({low}) to {drops[high]:.1%} ({high})"
    need = f"at least {least:.0%} below" if least else "below"
    seeds = seed_spread(summaries, drops)
    note = (f"; over seeds: {seeds}" if seeds else "") + note
    worse = [f"{r} ({drops[r]:.1%})" for r in summaries if not (drops[r] > least if least else drops[r] > 0)]
    if worse:
        return "FAIL", f"{label} not {need} the base model's ({base[metric]:.4g}) for {', '.join(worse)}{note}", numbers
    return "PASS", f"every run's {label} is {need} the base model's ({base[metric]:.4g}): {sizes}{note}", numbers


def seed_groups(summaries: dict[str, dict | None]) -> dict[str, list[str]]:
    """The runs among ``summaries`` that are seed repeats of one run (spec.repeat_of), grouped by
    that run, itself first; runs without repeats are left out."""
    groups: dict[str, list[str]] = {}
    for run, s in summaries.items():
        of = ((s or {}).get("spec") or {}).get("repeat_of")
        if of:
            groups.setdefault(of, [of] if of in summaries else []).append(run)
    return groups


def seed_spread(summaries: dict[str, dict], values: dict[str, float]) -> str:
    """'lora 12.9%–13.4% (n = 3)' for each repeated run: the range of its seeds' values."""
    parts = []
    for run, members in seed_groups(summaries).items():
        got = [values[m] for m in members if m in values]
        parts.append(f"{run} {min(got):.1%}–{max(got):.1%} (n = {len(got)})")
    return "; ".join(parts)


def rests_on(runs_dir: Path, runs: list[str], numbers: dict) -> str:
    """How many runs a verdict rests on, the seeds of repeated ones, and the timed steps of a speed
    verdict (claims.md's "rests on" column)."""
    summaries = {r: s for r, s in _load(runs_dir, runs).items() if s is not None}
    text = f"{len(summaries)} run{'s' * (len(summaries) != 1)}"
    groups = seed_groups(summaries)
    if groups:
        text += " (" + ", ".join(f"{run} over {len(m)} seeds" for run, m in groups.items()) + ")"
    steps = [v["steps"] for v in numbers.values() if isinstance(v, dict) and isinstance(v.get("steps"), list)]
    for mine, theirs in steps:  # a speed ratio: the steady steps of the run and of the one it is against
        text += f"; speed on {mine} and {theirs} timed steps"
    return text


def check_twins_agree(claim: dict, runs_dir: Path, all_runs: list[str], tolerance: dict | None) -> tuple:
    """Every run with an offload mechanism trained the same model as its twin without it (twins.py):
    FAIL naming each run that departs, PASS when at least one was compared and none departs."""
    runs = all_runs if claim["runs"] == "all" else claim["runs"]
    summaries = _load(runs_dir, runs)
    if why := _unavailable(summaries):
        return "N/A", why, {}
    if tolerance is None:
        return "N/A", "no twins.tolerance was given", {}
    twins = compare_twins(runs, runs_dir, tolerance)
    if not twins:
        return "N/A", "no run of this profile has an offload mechanism", {}
    numbers = {
        f"{run} vs {a['twin'] or 'no twin'}": {
            "max train-loss difference": a.get("max_loss_diff"),
            "eval-loss difference": a.get("eval_loss_diff"),
            "tolerance": a.get("tolerance"),
            "verdict": a["verdict"],
        }
        for run, a in twins.items()
    }
    departs = [f"{run} ({a['note']})" for run, a in twins.items() if a["verdict"] == "departs"]
    compared = [run for run, a in twins.items() if a["verdict"] == "agrees"]
    unchecked = [f"{run}: {a['note']}" for run, a in twins.items() if a["verdict"] in ("no twin", "not run")]
    rest = f"; not compared: {'; '.join(unchecked)}" if unchecked else ""
    if departs:
        return "FAIL", "departs from its twin without offload: " + "; ".join(departs) + rest, numbers
    if not compared:
        return "N/A", "no offload run could be compared with a twin" + rest, numbers
    worst = max(compared, key=lambda r: twins[r]["max_loss_diff"])
    return (
        "PASS",
        f"{len(compared)} offload runs agree with their twins step by step; the largest train-loss difference is "
        f"{twins[worst]['max_loss_diff']:.1e} ({worst} vs {twins[worst]['twin']}, tolerance "
        f"{twins[worst]['tolerance']:g})" + rest,
        numbers,
    )


def runs_device(runs_dir: Path, runs: list[str]) -> str | None:
    """What a claim's runs ran on: cuda if any of them did, cpu if all that left a summary ran on
    the CPU, None if none did."""
    devices = {s.get("device") for s in _load(runs_dir, runs).values() if s is not None}
    if not devices:
        return None
    return "cuda" if "cuda" in devices else "cpu"


def expectation(claim: dict, device: str | None, profile: str | None) -> dict:
    """The verdict the claims file expects of `claim` on these runs (its key `expected`: the first
    entry whose device and profile match), with why; PASS when no entry matches."""
    for entry in claim.get("expected", []):
        if all(entry[k] == have for k, have in (("device", device), ("profile", profile)) if k in entry):
            where = [f"on a {'CPU' if entry['device'] == 'cpu' else 'GPU'}"] if "device" in entry else []
            where += [f"on the {entry['profile']} profile"] if "profile" in entry else []
            return {"verdict": entry["verdict"], "why": entry["why"], "when": " ".join(where)}
    return {"verdict": "PASS", "why": None, "when": None}


def check_claims(
    claims: list[dict],
    runs_dir: Path,
    base: dict | None,
    all_runs: list[str],
    twin_tolerance: dict | None = None,
    profile: str | None = None,
) -> list[dict]:
    """Each claim's verdict, reason and numbers, and the verdict the claims file expects on these
    runs' device and this profile (:func:`expectation`): as_expected false flags one that differs."""
    results = []
    for claim in claims:
        if claim["check"] == "at_most":
            verdict, reason, numbers = check_at_most(claim, runs_dir)
        elif claim["check"] == "oom_vs_ok":
            verdict, reason, numbers = check_oom_vs_ok(claim, runs_dir)
        elif claim["check"] == "below_base":
            verdict, reason, numbers = check_below_base(claim, runs_dir, base, all_runs)
        elif claim["check"] == "twins_agree":
            verdict, reason, numbers = check_twins_agree(claim, runs_dir, all_runs, twin_tolerance)
        else:
            raise ValueError(f"claim {claim['id']}: unknown check {claim['check']!r}")
        runs = claim["runs"] if "runs" in claim else [claim["run"], *claim["against"]]
        runs = all_runs if runs == "all" else runs
        expected = expectation(claim, runs_device(runs_dir, runs), profile)
        results.append(
            {
                "id": claim["id"],
                "statement": claim["statement"],
                "verdict": verdict,
                "reason": reason,
                "runs": runs,
                "numbers": numbers,
                "expected": expected,
                "as_expected": verdict == expected["verdict"],
                "rests_on": rests_on(runs_dir, runs, numbers),
            }
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.claims", description=__doc__.split("\n")[0])
    parser.add_argument("--claims", type=Path, required=True)
    parser.add_argument("--runs-dir", type=Path, default=Path("results/runs"))
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--runs", nargs="+", required=True, help="every run of the profile")
    parser.add_argument("--twin-tolerance", default=None, help='config key twins.tolerance as JSON: {"fp32": ..}')
    parser.add_argument(
        "--predict",
        nargs=2,
        metavar=("PROFILE", "MODEL_CONFIG"),
        help="config key prediction: beside each verdict, the memory model's for this GPU profile",
    )
    parser.add_argument("--out", type=Path, required=True, help="claims.json; claims.md is written beside it")
    args = parser.parse_args(argv)
    base = json.loads(args.base.read_text()) if args.base.is_file() else None
    tolerance = load_spec(args.twin_tolerance) if args.twin_tolerance else None
    claims = load_claims(args.claims)
    results = check_claims(claims, args.runs_dir, base, args.runs, tolerance, args.profile)
    predicted_for = None
    if args.predict:
        predicted = predict_claims(claims, *args.predict, labels=LABELS)
        predicted_for = predicted["for"]
        for r in results:
            r["predicted"] = predicted["claims"][r["id"]]
    write_json(args.out, {"profile": args.profile, "predicted_for": predicted_for, "claims": results})
    markdown = to_markdown(args.profile, results, predicted_for)
    write_text(args.out.with_suffix(".md"), markdown)
    write_text(args.out.with_suffix(".html"), to_html(args.profile, results, predicted_for))
    print(markdown, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
