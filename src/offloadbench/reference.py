"""Compare this run's tables with the shipped reference results of the same profile.

    python -m offloadbench.reference compare --table results/tables/comparison.csv \
        --reference results/reference/default --tolerances '{"loss": 0.02, ...}' --out results/compare/reference.json
    python -m offloadbench.reference record --profile default --command "make run"   # after a real run

``compare`` first checks that this run trained on the reference's data (the hashes of each dataset's
text and token blocks, from ``results/data/<dataset>/manifest.json``): on different data it names
the hashes and judges no metric, since every number would differ for that reason alone. Then it
reports, for every run and metric, the reference value, this run's value, the deviation
and whether it is within the tolerance of its group (timings loosely, memory and losses tightly).
A deviation is max(a/b, b/a) - 1, so "within 0.25" means at most 25% larger or smaller either way.
It never fails the workflow: a reviewer reads the verdicts in results/compare/reference.md.

``record`` copies results/tables/comparison.*, memory.csv and results/claims.* into results/reference/<profile>/
and writes provenance.json beside them (command, date, hardware, versions, commit, data hashes), so a reference
always comes from a real run whose command and machine are written down.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd

from . import html
from .io import atomic_path, write_json, write_text
from .spec import load_spec

# comparison.csv column -> tolerance group (config key reference.tolerances.<group>)
METRICS = {
    "train loss": "loss",
    "eval loss": "loss",
    "eval gain": "gain",
    "host RSS peak (GiB)": "memory",
    "GPU alloc peak (GiB)": "memory",
    "GPU reserved peak (GiB)": "memory",
    "GPU NVML peak (GiB)": "memory",
    "NVMe written (GiB)": "memory",
    "checkpoint (MiB)": "memory",
    "tokens/s": "time",
    "step time (s)": "time",
    "wall time (s)": "time",
}


def deviation(current: float, reference: float) -> float:
    """max(a/b, b/a) - 1: symmetric, 0 when equal; inf when exactly one of them is zero."""
    if current == reference:
        return 0.0
    if current <= 0 or reference <= 0:
        return math.inf
    return max(current / reference, reference / current) - 1


def _number(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return None if pd.isna(value) else float(value)


def compare(table: pd.DataFrame, reference: pd.DataFrame, tolerances: dict[str, float]) -> list[dict]:
    """One row per (run, metric) that both tables have a number for; runs, statuses or devices that
    differ get one row saying so instead of numbers."""
    rows = []
    ref = reference.set_index("run")
    for _, row in table.iterrows():
        run = row["run"]
        if run not in ref.index:
            rows.append({"run": run, "metric": "run", "verdict": "no reference", "note": "not in the reference"})
            continue
        want = ref.loc[run]
        if row["status"] != want["status"]:
            note = f"status {row['status']}, reference {want['status']}"
            rows.append({"run": run, "metric": "status", "verdict": "differs", "note": note})
            continue
        if row.get("device") != want.get("device"):
            note = f"device {row.get('device')}, reference {want.get('device')}: numbers are not comparable"
            rows.append({"run": run, "metric": "device", "verdict": "differs", "note": note})
            continue
        for metric, group in METRICS.items():
            mine, theirs = _number(row.get(metric)), _number(want.get(metric))
            if mine is None and theirs is None:
                continue
            if mine is None or theirs is None:
                note = "missing here" if mine is None else "missing in the reference"
                rows.append({"run": run, "metric": metric, "verdict": "differs", "note": note})
                continue
            dev = deviation(mine, theirs)
            rows.append(
                {
                    "run": run,
                    "metric": metric,
                    "group": group,
                    "reference": theirs,
                    "current": mine,
                    "deviation": dev,
                    "tolerance": tolerances[group],
                    "verdict": "within" if dev <= tolerances[group] else "outside",
                }
            )
    for run in sorted(set(ref.index) - set(table["run"])):
        rows.append({"run": run, "metric": "run", "verdict": "no result", "note": "in the reference, not run here"})
    return rows


def data_identity(manifest: dict) -> dict:
    """What identifies a dataset's bytes: the hash of each split's text and of its token blocks."""
    return {
        split: {"text_sha256": manifest["corpus_sha256"][split], "data_sha256": info["data_sha256"]}
        for split, info in sorted(manifest["splits"].items())
    }


def read_data(folders: list[Path]) -> dict[str, dict]:
    """Data identity of each tokenized dataset folder (results/data/<dataset>), by dataset name."""
    out = {}
    for folder in folders:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
        out[manifest["dataset"]] = data_identity(manifest)
    return out


def data_differences(mine: dict[str, dict], reference: dict[str, dict]) -> list[str]:
    """One sentence per dataset or hash that is not the reference's; empty when the data are the same."""
    out = []
    for name in sorted(set(mine) | set(reference)):
        if name not in reference:
            out.append(f"dataset {name} is not in the reference (it has {', '.join(sorted(reference)) or 'none'})")
        elif name not in mine:
            out.append(f"the reference's dataset {name} was not used here")
        else:
            for split in sorted(set(mine[name]) | set(reference[name])):
                for key in ("text_sha256", "data_sha256"):
                    here, there = mine[name].get(split, {}).get(key), reference[name].get(split, {}).get(key)
                    if here != there:
                        out.append(f"{name} {split} {key.split('_')[0]} sha256 {here} here, {there} in the reference")
    return out


def to_markdown(rows: list[dict], provenance: dict | None, tolerances: dict[str, float]) -> str:
    counts = pd.Series([r["verdict"] for r in rows]).value_counts().to_dict() if rows else {}
    lines = ["# This run against the reference results", ""]
    if provenance:
        lines += [
            f"Reference: `{provenance['command']}` on {provenance['date']}, {provenance['hardware']['cpu']} "
            f"({provenance['hardware']['cores']} cores), GPU: {provenance['hardware']['gpu'] or 'none'}, "
            f"commit {provenance['git_commit'][:10]}.",
            "",
        ]
    tol = ", ".join(f"{g} {t:g}" for g, t in tolerances.items())
    judged = sum(1 for r in rows if "deviation" in r)
    others = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()) if v not in ("within", "outside"))
    lines += [
        f"Tolerances (deviation = max(a/b, b/a) - 1): {tol}. {counts.get('within', 0)} of {judged} metrics within, "
        f"{counts.get('outside', 0)} outside" + (f"; {others}" if others else "") + ". Losses are judged twice: "
        "as values (loss) and as the gain over the base model (eval gain = base eval loss - the run's), so a "
        "run that did not train is outside even where its loss is within the loss tolerance.",
        "",
        "| run | metric | reference | this run | deviation | tolerance | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "deviation" in r:
            dev = "inf" if math.isinf(r["deviation"]) else f"{r['deviation']:.3f}"
            verdict = r["verdict"] if r["verdict"] == "within" else f"**{r['verdict']}**"
            lines.append(
                f"| {r['run']} | {r['metric']} | {r['reference']:.4g} | {r['current']:.4g} | {dev} "
                f"| {r['tolerance']:g} | {verdict} |"
            )
        else:
            lines.append(f"| {r['run']} | {r['metric']} | | | | | **{r['verdict']}**: {r['note']} |")
    return "\n".join(lines) + "\n"


DIFFERENT_DATA = (
    "This run's data are not the reference's, so no metric is judged: every number would differ for that reason alone."
)
NO_DATA_HASHES = "The reference records no data hashes: whether it trained on the same data is not checked."


def run_compare(table_csv: Path, reference_dir: Path, tolerances: dict, out: Path, data: dict | None = None) -> dict:
    """Compare, or say why not. ``data``: this run's data identity (read_data); None skips the check."""
    table = pd.read_csv(table_csv)
    ref_csv = reference_dir / "comparison.csv"
    title = "# This run against the reference results\n\n"
    if not ref_csv.is_file():
        result = {"reference": str(reference_dir), "available": False, "rows": [], "tolerances": tolerances}
        markdown = f"{title}No reference results in {reference_dir}.\n"
    else:
        prov_path = reference_dir / "provenance.json"
        provenance = json.loads(prov_path.read_text()) if prov_path.is_file() else None
        result = {"reference": str(reference_dir), "available": True, "provenance": provenance}
        result["tolerances"] = tolerances
        ref_data = (provenance or {}).get("data")
        differences = data_differences(data, ref_data) if data is not None and ref_data is not None else []
        result["data"] = {
            "checked": data is not None and ref_data is not None,
            "identical": None if data is None or ref_data is None else not differences,
            "differences": differences,
        }
        if differences:
            result["rows"] = []
            markdown = title + DIFFERENT_DATA + "\n\n" + "".join(f"- {d}\n" for d in differences)
        else:
            rows = compare(table, pd.read_csv(ref_csv), tolerances)
            result["rows"] = [
                {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows
            ]
            markdown = to_markdown(rows, provenance, tolerances)
            if data is not None and ref_data is None:
                markdown += f"\n{NO_DATA_HASHES}\n"
            elif result["data"]["identical"]:
                names = ", ".join(sorted(data))
                markdown += f"\nData: the same text and token blocks as the reference ({names}; sha256 per split).\n"
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown)
    write_text(out.with_suffix(".html"), to_html(result))
    return result


def to_html(result: dict) -> str:
    title = "This run against the reference results"
    if not result["available"]:
        return html.page(title, html.paragraph(f"No reference results in {result['reference']}."))
    if result["data"]["differences"]:
        items = "".join(f"<li>{html.escape(d)}</li>" for d in result["data"]["differences"])
        return html.page(title, html.paragraph(DIFFERENT_DATA) + f"<ul>{items}</ul>")
    prov = result["provenance"]
    intro = (
        f"Reference: {prov['command']} on {prov['date']}, {prov['hardware']['cpu']} ({prov['hardware']['cores']} "
        f"cores), GPU: {prov['hardware']['gpu'] or 'none'}. "
        if prov
        else ""
    )
    tol = ", ".join(f"{g} {t:g}" for g, t in result["tolerances"].items())
    rows = pd.DataFrame(result["rows"])
    judged = rows[rows["tolerance"].notna()] if "tolerance" in rows else rows.iloc[0:0]  # a metric with a tolerance
    within = int((judged["verdict"] == "within").sum())
    intro += (
        f"Deviation = max(a/b, b/a) - 1; tolerances per group: {tol}. {within} of {len(judged)} metrics within, "
        f"{len(judged) - within} outside (timings are judged loosely, memory and losses tightly)."
    )
    cols = [
        c for c in ("run", "metric", "reference", "current", "deviation", "tolerance", "verdict", "note") if c in rows
    ]
    return html.page(
        title,
        html.paragraph(intro)
        + html.table(rows[cols], {"reference": 4, "current": 4, "deviation": 3}, {"verdict": "verdict"}),
    )


def record(profile: str, command: str, results: Path, reference_root: Path) -> Path:
    """Copy a finished run's tables and claims into the reference folder with their provenance."""
    dest = reference_root / profile
    dest.mkdir(parents=True, exist_ok=True)
    sources = [results / "tables" / f"comparison{ext}" for ext in (".csv", ".md", ".tex")]
    sources += [results / "tables" / "memory.csv", results / "claims.json", results / "claims.md"]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise SystemExit(f"cannot record a reference: {', '.join(missing)} missing; run the workflow first")
    summaries = sorted((results / "runs").glob("*/summary.json"))
    first = json.loads(summaries[0].read_text())
    commits = {json.loads(p.read_text())["git_commit"] for p in summaries}
    for src in sources:
        with atomic_path(dest / src.name) as tmp:
            shutil.copyfile(src, tmp)
    provenance = {
        "profile": profile,
        "command": command,
        "date": dt.datetime.fromtimestamp(summaries[-1].stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        "hardware": first["hardware"],
        "versions": first["versions"],
        "git_commit": sorted(commits)[0] if len(commits) == 1 else ", ".join(sorted(commits)),
        "recorded_with": _git_head(),
    }
    data = read_data(sorted(p.parent for p in (results / "data").glob("*/manifest.json")))
    if data:
        provenance["data"] = data
    write_json(dest / "provenance.json", provenance)
    return dest


def _git_head() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.reference", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmp = sub.add_parser("compare", help="this run's comparison table against a reference folder")
    cmp.add_argument("--table", type=Path, required=True)
    cmp.add_argument("--reference", type=Path, required=True)
    cmp.add_argument("--tolerances", required=True, help='JSON: {"loss": .., "memory": .., "time": ..}')
    cmp.add_argument("--out", type=Path, required=True, help="reference.json; reference.md is written beside it")
    cmp.add_argument("--data", type=Path, nargs="*", default=None, help="results/data/<dataset> folders of this run")
    rec = sub.add_parser("record", help="make the current results the reference of a profile")
    rec.add_argument("--profile", required=True)
    rec.add_argument("--command", required=True, help="the command that produced the results, as typed")
    rec.add_argument("--results", type=Path, default=Path("results"))
    rec.add_argument("--reference-root", type=Path, default=Path("results/reference"))
    args = parser.parse_args(argv)
    if args.cmd == "compare":
        data = read_data(args.data) if args.data is not None else None
        result = run_compare(args.table, args.reference, load_spec(args.tolerances), args.out, data)
        print(args.out.with_suffix(".md").read_text() if result["available"] else "no reference", file=sys.stderr)
    else:
        print(record(args.profile, args.command, args.results, args.reference_root), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
