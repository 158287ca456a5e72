"""Per-rule job times of a finished workflow, from Snakemake's own benchmark files, against the
work each job did: for training jobs, the run's wall time (summary.json ``wall_s``: from the spec
read to the summary written) and its training time (``train_s``), so that start-up and exit
(interpreter, imports, launcher, the process ending) is the job's time less the run's. A rule whose
jobs did not all leave a summary gets no run columns rather than a job time counted as start-up.

    .venv/bin/python tools/rule_times.py results            # a markdown table on stdout
    .venv/bin/python tools/rule_times.py results --json out.json

Every rule writes results/benchmarks/<rule>/<wildcards>.tsv (the ``benchmark:`` directive); the
table sums them per rule. Job times of jobs that ran side by side add up to more than the
workflow's wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path


def job_seconds(tsv: Path) -> float:
    with tsv.open() as fh:
        return float(next(csv.DictReader(fh, delimiter="\t"))["s"])


def rule_rows(results: Path) -> list[dict]:
    rows = []
    for folder in sorted(p for p in (results / "benchmarks").iterdir() if p.is_dir()):
        jobs = {tsv.stem: job_seconds(tsv) for tsv in sorted(folder.glob("*.tsv"))}
        row = {"rule": folder.name, "jobs": len(jobs), "job_s": sum(jobs.values()), "median_job_s": None}
        row["median_job_s"] = statistics.median(jobs.values()) if jobs else None
        runs = {"train": "runs", "pretrain": "pretrain"}.get(folder.name)
        if runs:
            summaries = [results / runs / name / "summary.json" for name in jobs]
            summaries = [json.loads(p.read_text()) for p in summaries if p.is_file()]
            if len(summaries) == len(jobs):
                row["run_wall_s"] = sum(s.get("wall_s") or 0 for s in summaries)
                row["train_s"] = sum(s.get("train_s") or 0 for s in summaries)
                row["startup_exit_s"] = row["job_s"] - row["run_wall_s"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def f(v):
        return "" if v is None else f"{v:,.1f}"

    out = [
        "| rule | jobs | job time (s) | median job (s) | run wall (s) | training (s) | start-up and exit (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: -r["job_s"]):
        out.append(
            f"| `{r['rule']}` | {r['jobs']} | {f(r['job_s'])} | {f(r['median_job_s'])} | "
            f"{f(r.get('run_wall_s'))} | {f(r.get('train_s'))} | {f(r.get('startup_exit_s'))} |"
        )
    total = sum(r["job_s"] for r in rows)
    out.append(f"| all | {sum(r['jobs'] for r in rows)} | {f(total)} | | | | |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not (args.results / "benchmarks").is_dir():
        print(f"error: {args.results / 'benchmarks'} missing: run the workflow first", file=sys.stderr)
        return 2
    rows = rule_rows(args.results)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
