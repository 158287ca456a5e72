"""Turn the run summaries into the paper's comparison tables (CSV, Markdown, LaTeX).

    python -m offloadbench.aggregate --spec '<aggregate spec JSON>' --out results/tables

The spec names every run of the profile and the baseline run. A run without a summary (it
failed before writing one) still gets a row, with status ``missing``, so nothing is dropped
silently. ``comparison.*`` has one row per run; ``relative.*`` divides each run's memory and
speed by the baseline's (memory saving x = baseline / run, slowdown x = baseline tokens/s / run).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import html
from .io import atomic_path, write_text
from .seeds import seeds_table
from .spec import load_spec
from .speed import spread, steady_rates
from .twins import compare_twins

GIB = 2**30
MIB = 2**20


def mechanism(summary: dict) -> str:
    """The offload that was in effect (summary.observed); where it differs from the config, both,
    e.g. ``optimizer:paged → not paged (no CUDA)``. A summary without observations (a run that
    failed before training) shows what was configured."""
    seen = (summary.get("observed") or {}).get("offload")
    if not seen:
        return summary["offload"]
    configured, notes = summary.get("offload_detail") or {}, summary["observed"].get("notes") or {}
    parts = []
    for kind in ("params", "optimizer", "activations"):
        want, got = configured.get(kind, "none"), seen.get(kind, "none")
        if want == got:
            parts += [f"{kind}:{got}"] if got != "none" else []
        else:
            parts.append(f"{kind}:{want} → {notes.get(kind) or got}")
    return "+".join(parts) or "none"


# column name (with unit) -> (summary key or function, scale, decimals in md/tex)
COLUMNS = {
    "run": ("run", None, None),
    "method": ("method", None, None),
    "offload": (mechanism, None, None),
    "precision": ("dtype", None, None),
    "device": ("device", None, None),
    "model size": (lambda s: s["spec"].get("model_size", "base"), None, None),
    "block": (lambda s: s["spec"]["block_size"], 1, 0),
    "seed": (lambda s: s["spec"]["seed"], 1, 0),
    "params (M)": ("params_total", 1e-6, 2),
    "trainable (M)": ("params_trainable", 1e-6, 3),
    "trainable (%)": (lambda s: 100 * s["params_trainable"] / s["params_total"], 1, 2),
    "GPU alloc peak (GiB)": ("gpu_allocated_peak_bytes", 1 / GIB, 2),
    "GPU reserved peak (GiB)": ("gpu_reserved_peak_bytes", 1 / GIB, 2),
    "GPU NVML peak (GiB)": ("gpu_nvml_used_peak_bytes", 1 / GIB, 2),
    "host RSS peak (GiB)": ("host_rss_peak_bytes", 1 / GIB, 2),
    # What the run added to the Python/torch runtime measured before the model loaded.
    "host above baseline (GiB)": ("host_rss_above_baseline_bytes", 1 / GIB, 2),
    # Loading and set-up (QLoRA's base is quantized from an unquantized copy in host memory).
    "host load peak (GiB)": ("host_rss_load_peak_bytes", 1 / GIB, 2),
    "NVMe written (GiB)": ("nvme_bytes_written", 1 / GIB, 2),
    # Compute threads of the training process (training.cpu_threads, or every core): speed is per
    # these threads, and runs of fewer threads trained side by side with another job.
    "threads": ("threads", 1, 0),
    "tokens/s": ("tokens_per_s", 1, 0),
    "step time (s)": (lambda s: s["train_step_s"], 1, 3),
    "wall time (s)": ("wall_s", 1, 1),
    # Before the model loads (interpreter, imports, dataset), then Trainer, optimizer and DeepSpeed's
    # engine before the first step, and what measuring cost inside the training time.
    "start-up (s)": ("startup_s", 1, 1),
    "set-up (s)": ("setup_s", 1, 1),
    "recorder (% of training)": (lambda s: 100 * s["recorder_cost"]["share"], 1, 2),
    "train loss": ("train_loss_final", 1, 3),
    "eval loss": ("eval_loss", 1, 3),
    # What training gained: the base model's eval loss minus the run's (results/eval/base.json). A
    # run that did not train gains 0, however close its loss is to a trained run's.
    "eval gain": ("eval_gain", 1, 4),
    "eval ppl": ("eval_ppl", 1, 1),
    "checkpoint (MiB)": ("checkpoint_bytes", 1 / MIB, 1),
    "status": ("status", None, None),
}


def _value(summary: dict, key, scale):
    try:
        value = key(summary) if callable(key) else summary.get(key)
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    if value is None or scale is None:
        return value
    return value * scale


def load_summary(run_dir: Path) -> dict | None:
    path = run_dir / "summary.json"
    if not path.is_file():
        return None
    summary = json.loads(path.read_text())
    metrics = run_dir / "metrics.jsonl"
    times = (
        [json.loads(line)["step_time_s"] for line in metrics.read_text().splitlines() if line.strip()]
        if metrics.is_file()
        else []
    )
    summary["train_step_s"] = sum(times) / len(times) if times else None
    return summary


TWIN_COLUMNS = ("twin", "twin max Δloss", "twin verdict")
# Each run's steps after the warm-up (speed.py): the median tokens/s, its interquartile range and n.
SPREAD_COLUMNS = ("tokens/s median", "tokens/s IQR", "timed steps")
JOB_COLUMNS = ("start-up (s)", "set-up (s)", "recorder (% of training)")  # a job's time that is not training


def comparison(
    runs: list[str], runs_dir: Path, base_eval_loss: float | None = None, twins: dict[str, dict] | None = None
) -> pd.DataFrame:
    """One row per run. ``twins`` (twins.compare_twins): each offload run's agreement with its twin
    (the same run without the offload); a run without an offload mechanism has empty twin cells."""
    twins = twins or {}
    rows = []
    for run in runs:
        summary = load_summary(runs_dir / run)
        if summary is None:
            rows.append({"run": run, "status": "missing"})
            continue
        loss = summary.get("eval_loss")
        # The base model's eval loss is that of the base size: a run of another size has no gain.
        own_base = (summary.get("spec") or {}).get("model_size", "base") == "base"
        summary["eval_gain"] = base_eval_loss - loss if own_base and None not in (base_eval_loss, loss) else None
        row = {col: _value(summary, key, scale) for col, (key, scale, _) in COLUMNS.items()}
        steps = spread(steady_rates(runs_dir / run))
        row["tokens/s median"] = steps["median"]
        row["tokens/s IQR"] = steps["q3"] - steps["q1"] if steps["q1"] is not None else None
        row["timed steps"] = steps["n"]
        twin = twins.get(run) or {}
        row.update(
            {
                "twin": twin.get("twin"),
                "twin max Δloss": twin.get("max_loss_diff"),
                "twin verdict": twin.get("verdict") and twin["verdict"] + _departure(twin),
            }
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, *SPREAD_COLUMNS, *TWIN_COLUMNS])


def _departure(twin: dict) -> str:
    step = twin.get("first_departure_step")
    return f" (step {step})" if twin.get("verdict") == "departs" and step else ""


RELATIVE = {
    "GPU alloc peak": ("GPU alloc peak (GiB)", "saving"),
    "GPU NVML peak": ("GPU NVML peak (GiB)", "saving"),
    "host RSS peak": ("host RSS peak (GiB)", "saving"),
    "host above baseline": ("host above baseline (GiB)", "saving"),
    "tokens/s": ("tokens/s", "slowdown"),
    "eval loss": ("eval loss", "ratio"),
}


def against(table: pd.DataFrame, baseline: str) -> pd.Series:
    """The run each row is compared with: the baseline for runs of its model size; for a run of
    another size (a memory-scale run), the first run of that size, since dividing the memory of a
    103 M-parameter model by a 2 M-parameter one's says nothing."""
    sizes = table.set_index("run")["model size"]
    first = {size: run for run, size in reversed(list(sizes.items()))}
    return table["run"].map(lambda run: baseline if sizes[run] == sizes[baseline] else first[sizes[run]])


def relative(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each run against the baseline of its model size (:func:`against`): memory saving x (>1 =
    less memory), slowdown x (>1 = slower)."""
    refs = against(table, baseline)
    base = table.set_index("run").loc[refs].reset_index(drop=True)
    out = pd.DataFrame({"run": table["run"], "against": refs, "method": table["method"], "offload": table["offload"]})
    for name, (col, kind) in RELATIVE.items():
        mine, ref = pd.to_numeric(table[col], errors="coerce"), pd.to_numeric(base[col], errors="coerce")
        if kind == "saving":
            out[f"{name} saving (x)"] = ref / mine
        elif kind == "slowdown":
            out["slowdown (x)"] = ref / mine
        else:
            out[f"{name} (x baseline)"] = mine / ref
    out["status"] = table["status"]
    return out


def decimals(table: pd.DataFrame) -> dict[str, int | str]:
    """Decimals per numeric column, or a format spec (twin differences span 1e-7 to 1e-1)."""
    known = {col: d for col, (_, _, d) in COLUMNS.items() if d is not None}
    known |= {"twin max Δloss": ".1e", "tokens/s median": 0, "tokens/s IQR": 0, "timed steps": 0}
    # the seeds table: one row per metric (losses ~6, perplexities ~500, tokens/s ~7,000), counts
    known |= {"median": ",.4g", "min": ",.4g", "max": ",.4g", "range": ".3g", "n": 0, "of": 0}
    return {col: known.get(col, 2) for col in table.columns if pd.api.types.is_numeric_dtype(table[col])}


def number(value, digits: int | str) -> str:
    """A number with thousands separated and ``digits`` decimals, or in a format spec like ``.1e``."""
    return format(value, digits) if isinstance(digits, str) else f"{value:,.{digits}f}"


def to_markdown(table: pd.DataFrame, digits: dict[str, int] | None = None) -> str:
    """Numbers with the given decimals (default: the comparison's), thousands separated, empty
    cells as an en dash."""
    shown = table.copy()
    for col, d in (digits if digits is not None else decimals(table)).items():
        shown[col] = table[col].map(lambda v, d=d: "–" if pd.isna(v) else number(v, d))
    return shown.fillna("–").to_markdown(index=False) + "\n"


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    """booktabs table (needs \\usepackage{booktabs}); empty cells print as an en dash."""
    styler = table.style.hide(axis="index").format(precision=2, na_rep="--", escape="latex")
    for col, d in decimals(table).items():
        if isinstance(d, str):
            styler = styler.format(lambda v, d=d: "--" if pd.isna(v) else format(v, d), subset=[col])
        else:
            styler = styler.format(precision=d, thousands=",", na_rep="--", subset=[col])
    styler = styler.format_index(escape="latex", axis="columns")
    return styler.to_latex(hrules=True, caption=caption, label=label, position="htbp", position_float="centering")


# The comparison's columns by theme: the HTML page shows one narrow table per theme (21 columns
# side by side do not fit a screen), and paper.tex keeps one headline column of each.
GROUPS = {
    "Setup": [
        "method",
        "offload",
        "precision",
        "device",
        "model size",
        "block",
        "seed",
        "params (M)",
        "trainable (M)",
        "trainable (%)",
        "status",
    ],
    "Memory": [
        "GPU alloc peak (GiB)",
        "GPU reserved peak (GiB)",
        "GPU NVML peak (GiB)",
        "host RSS peak (GiB)",
        "host above baseline (GiB)",
        "host load peak (GiB)",
        "NVMe written (GiB)",
        "checkpoint (MiB)",
    ],
    # tokens/s over all steps as in the summary; median, IQR and n over the steps after the first
    # WARMUP_STEPS (what speed claims are judged on)
    "Speed": ["threads", "tokens/s", *SPREAD_COLUMNS, "step time (s)", "wall time (s)", *JOB_COLUMNS],
    "Quality": ["train loss", "eval loss", "eval gain", "eval ppl"],
    # Offload keeps the math: each offload run against the same run without it (twins.py).
    "Fidelity": ["offload", *TWIN_COLUMNS],
}
PAPER = ["run", "GPU alloc peak (GiB)", "host RSS peak (GiB)", "tokens/s", "eval ppl", "status"]


# The relative table's own groups (its columns are not the comparison table's).
RELATIVE_GROUPS = {
    "Setup": ["against", "method", "offload", "status"],
    "Memory": [f"{name} saving (x)" for name, (_, kind) in RELATIVE.items() if kind == "saving"],
    "Speed": ["slowdown (x)"],
    "Quality": ["eval loss (x baseline)"],
}


def html_groups(table: pd.DataFrame, groups: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """Column groups for the HTML page, each led by the run column; every column of the table is
    in some group, and a group none of whose columns the table has is left out."""
    if not groups:
        return {"": list(table)}
    out = {name: ["run", *[c for c in cols if c in table]] for name, cols in groups.items()}
    out = {name: cols for name, cols in out.items() if len(cols) > 1}
    placed = {c for cols in out.values() for c in cols}
    rest = [c for c in table if c not in placed]
    if rest:
        out["Other"] = ["run", *rest]
    return out


def write_tables(table: pd.DataFrame, stem: Path, caption: str, groups: dict[str, list[str]] | None = None) -> None:
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    write_text(stem.with_suffix(".md"), to_markdown(table))
    write_text(stem.with_suffix(".tex"), to_latex(table, caption, f"tab:{stem.name}"))
    body = []
    for name, cols in html_groups(table, groups).items():
        part = table[cols]
        body += [f"<h2>{name}</h2>" if name else "", html.table(part, decimals(part), css={"status": "status"})]
    write_text(stem.with_suffix(".html"), html.page(caption.rstrip("."), "\n".join(body)))


def memory_table(runs: list[str], memory_dir: Path) -> pd.DataFrame:
    """Predicted against measured peak per device, with DeepSpeed's estimate for ZeRO-3 runs."""
    rows = []
    for run in runs:
        path = memory_dir / f"{run}.json"
        if not path.is_file():
            rows.append({"run": run})
            continue
        m = json.loads(path.read_text())
        row = {"run": run, "device": m["device"]}
        for where, label in (("gpu", "GPU"), ("host", "host"), ("nvme", "NVMe written")):
            # NVMe: the swap files' bytes written over the run (what is measured), not their size
            predicted = m["nvme_written"]["total"] if where == "nvme" else m["predicted"][where]["total"]
            # a CPU run has no accelerator: an empty cell, not a predicted 0
            row[f"{label} predicted (GiB)"] = None if where == "gpu" and m["device"] != "cuda" else predicted / GIB
            measured = m["measured"][where]
            row[f"{label} measured (GiB)"] = None if measured is None else measured / GIB
            row[f"{label} ratio"] = m["ratio"][where]
            if where == "host":  # without the runtime (older files lack it)
                above = m.get("above_baseline") or {"predicted": {}, "measured": {}, "ratio": {}}
                own, seen = above["predicted"].get("host"), above["measured"].get("host")
                row["host above baseline predicted (GiB)"] = None if own is None else own / GIB
                row["host above baseline measured (GiB)"] = None if seen is None else seen / GIB
                row["host above baseline ratio"] = above["ratio"].get("host")
            if where == "gpu":
                # the peak of loading the model and setting up the engine (older files lack it)
                load, measured_load = (
                    (m.get("predicted_load") or {}).get("gpu"),
                    (m.get("measured_load") or {}).get("gpu"),
                )
                row["GPU load predicted (GiB)"] = None if load is None or m["device"] != "cuda" else load / GIB
                row["GPU load measured (GiB)"] = None if measured_load is None else measured_load / GIB
        ds = m.get("deepspeed_estimate")
        row["DeepSpeed est. GPU (GiB)"] = ds["gpu_bytes"] / GIB if ds else None
        row["DeepSpeed est. host (GiB)"] = ds["host_bytes"] / GIB if ds else None
        rows.append(row)
    table = pd.DataFrame(rows)
    for col in table.columns[1:]:
        if col != "device":
            table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


def write_memory_table(table: pd.DataFrame, stem: Path, profile: str) -> None:
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    digits = {c: (3 if "ratio" not in c else 2) for c in table.columns if c not in ("run", "device")}
    write_text(stem.with_suffix(".md"), to_markdown(table, digits))
    note = html.paragraph(
        "ratio = measured / predicted. Host is the peak RSS from the start of training, and the same "
        "without the Python/torch runtime measured before the model loaded (above baseline): what the model "
        "predicts is the part above the baseline. GPU load is torch's allocated peak while the model loads and the "
        "engine is set up (a ZeRO-3 QLoRA model sits whole on one GPU before it is partitioned). NVMe is "
        "bytes written by the training process. On a CPU run the accelerator columns are empty: everything "
        "lives in host memory."
    )
    write_text(
        stem.with_suffix(".html"),
        html.page(f"Memory model against measurements ({profile} profile)", note + html.table(table, digits)),
    )


def write_paper_table(table: pd.DataFrame, path: Path, caption: str) -> None:
    """A single-column LaTeX table: one headline number per theme (the full table is comparison.tex)."""
    write_text(path, to_latex(table[PAPER], caption, "tab:paper"))


PROVENANCE = ("status", "error", "seed", "resumed_from", "git_commit", "config_sha256", "world_size", "optimizer")


def provenance_page(runs: list[str], runs_dir: Path, profile: str) -> str:
    """Where each run's numbers came from: code, settings, software, machine, and what happened."""
    summaries = {run: load_summary(runs_dir / run) for run in runs}
    found = {run: s for run, s in summaries.items() if s is not None}
    short = {"git_commit": 10, "config_sha256": 12}  # enough to identify; the full values are in summary.json
    overview = pd.DataFrame(
        [
            {"run": run, **{k: (s or {}).get(k, "missing" if k == "status" else None) for k in PROVENANCE}}
            for run, s in summaries.items()
        ]
    )
    for col, n in short.items():
        overview[col] = overview[col].map(lambda v, n=n: v[:n] if isinstance(v, str) else v)
    body = [
        html.paragraph(
            "Each run's summary.json holds all of this; the spec is the exact settings the job was started with "
            "(config defaults merged with the run's overrides), and config_sha256 is its hash."
        ),
        html.table(overview.astype(object)),
    ]
    if found:
        versions = pd.DataFrame({run: s.get("versions", {}) for run, s in found.items()}).T.reset_index(names="run")
        hardware = pd.DataFrame({run: s.get("hardware", {}) for run, s in found.items()}).T.reset_index(names="run")
        body += ["<h2>Software</h2>", html.table(versions.astype(object))]
        body += ["<h2>Hardware</h2>", html.table(hardware.astype(object))]
    for run, s in found.items():
        spec = json.dumps(s.get("spec"), indent=2, sort_keys=True)
        body.append(f"<h2>{run}: spec</h2><pre>{html.escape(spec)}</pre>")
    return html.page(f"Provenance of each run ({profile} profile)", "\n".join(body))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.aggregate", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help='{"runs": [...], "baseline_run": ..., "profile": ...}')
    parser.add_argument("--runs-dir", type=Path, default=Path("results/runs"))
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    parser.add_argument("--memory-dir", type=Path, default=None, help="results/memory: adds memory.{csv,md,html}")
    parser.add_argument("--base", type=Path, default=None, help="results/eval/base.json: adds the eval gain column")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    base = json.loads(args.base.read_text())["eval_loss"] if args.base else None
    twins = compare_twins(spec["runs"], args.runs_dir, spec["twin_tolerance"]) if "twin_tolerance" in spec else None
    table = comparison(spec["runs"], args.runs_dir, base, twins)
    write_tables(table, args.out / "comparison", f"Fine-tuning methods compared ({spec['profile']} profile).", GROUPS)
    write_paper_table(
        table,
        args.out / "paper.tex",
        f"Peak accelerator and host memory, throughput and validation perplexity ({spec['profile']} profile).",
    )
    rel = relative(table, spec["baseline_run"])
    write_tables(
        rel,
        args.out / "relative",
        f"Each run relative to {spec['baseline_run']}, or a run of another model size to the first run of"
        f" that size (column against; {spec['profile']} profile).",
        RELATIVE_GROUPS,
    )
    write_text(args.out / "provenance.html", provenance_page(spec["runs"], args.runs_dir, spec["profile"]))
    repeats = spec.get("repeats") or {}
    write_tables(
        seeds_table(table, repeats),
        args.out / "seeds",
        f"Seed repeats: median, lowest and highest value and n of each repeated run ({spec['profile']} profile)."
        if repeats
        else f"No seed repeats in the {spec['profile']} profile (config key repeats).",
    )
    if args.memory_dir:
        write_memory_table(memory_table(spec["runs"], args.memory_dir), args.out / "memory", spec["profile"])
    print(to_markdown(table), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
