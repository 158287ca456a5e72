"""Does a run train as fast beside another job as alone? The premise of ``training.cpu_threads``.

    make run                                       # the default workflow prepares data and base models
    .venv/bin/python benchmarks/side_by_side.py    # 5 alternating repeats of 2 runs, ~6 minutes on 2 cores
    .venv/bin/python benchmarks/side_by_side.py --runs lora --repeats 7 --out results/benchmarks/side_by_side.json

A run whose ``training.cpu_threads`` is below the machine's cores shares the machine in the workflow:
Snakemake starts another job of the same kind on the free cores. Each repeat here trains the run as
the rule does (``python -m offloadbench.train``, OMP_NUM_THREADS = its cpu_threads) twice in fresh
processes: alone, and beside a neighbour, the same run with twice the steps started at the same
moment, so that it trains during the whole of the measured run's training. The order alternates
from one repeat to the next, so that a slow minute of the machine hits both sides alike.

Per run: the median tokens/s (summary.json ``tokens_per_s``) of each side with its range, and the
ratio beside / alone of the medians with its 95% bootstrap interval over the repeats
(offloadbench.speed.ratio_interval). The goal is at least 0.95 (a neighbour costs at most 5%),
judged on the interval: met (all of it at least 0.95), missed (all of it below), undecided (it
straddles 0.95: too noisy for this many repeats). Exit status 0 / 1 / 3 for all met / one missed /
none missed but one undecided; 2 when the inputs are missing or a run takes every core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from throughput import REPO, exit_status, rule_summary, workflow_inputs, write_record
from throughput import judge as ratio_judge

from offloadbench.env import prepare_process
from offloadbench.resolve import resolve_spec

GOAL = 0.95  # beside / alone tokens/s


def judge(beside: list[float], alone: list[float]) -> dict:
    """beside / alone with its interval, judged against GOAL as throughput.py judges its ratio."""
    return ratio_judge(alone, beside, GOAL)


def neighbour_of(spec: dict) -> dict:
    """The same run with twice its steps: it trains for as long as the measured one and more."""
    steps = spec["training"]["max_steps"] * 2
    return {**spec, "run": f"{spec['run']}-neighbour", "training": {**spec["training"], "max_steps": steps}}


def tokens_per_s(spec: dict, data_dir: Path, neighbour: bool) -> float:
    env = {"OMP_NUM_THREADS": str(spec["training"]["cpu_threads"])}
    if not neighbour:
        return rule_summary(spec, data_dir, env)["tokens_per_s"]
    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(rule_summary, neighbour_of(spec), data_dir, env)
        mine = pool.submit(rule_summary, spec, data_dir, env)
        other.result()
        return mine.result()["tokens_per_s"]


def row_text(row: dict) -> str:
    alone, beside = row["alone_tokens_per_s"], row["beside_tokens_per_s"]
    return (
        f"{row['run']:10s} threads {row['threads']}   alone {statistics.median(alone):7.0f} tokens/s "
        f"[{min(alone):.0f}-{max(alone):.0f}]   beside {statistics.median(beside):7.0f} "
        f"[{min(beside):.0f}-{max(beside):.0f}]   ratio {row['ratio']:.3f} (95% {row['ratio_low']:.3f}-"
        f"{row['ratio_high']:.3f}, n={len(alone)})   {row['verdict']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["full", "lora"])
    parser.add_argument("--repeats", type=int, default=5, help="alternating alone/beside pairs per run (at least 3)")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: fewer give no interval to judge the ratio on")
    prepare_process()
    found = workflow_inputs(args.runs, args.results)
    if found is None:
        return 2
    data_dir, specs = found
    cores = os.cpu_count() or 1
    alone_runs = [n for n, s in specs.items() if (s["training"]["cpu_threads"] or cores) * 2 > cores]
    if alone_runs:
        names = ", ".join(alone_runs)
        print(f"error: {names} leave no core for a neighbour here (training.cpu_threads)", file=sys.stderr)
        return 2
    rows = []
    for name, spec in specs.items():
        spec = resolve_spec(spec)
        alone, beside = [], []
        for i in range(args.repeats):
            for side in (False, True) if i % 2 == 0 else (True, False):
                (beside if side else alone).append(tokens_per_s(spec, data_dir, side))
        row = {"run": name, "threads": spec["training"]["cpu_threads"], "alone_tokens_per_s": alone}
        rows.append({**row, "beside_tokens_per_s": beside, **judge(beside, alone)})
        print(row_text(rows[-1]), flush=True)
    if args.out:
        write_record(args.out, cores=cores, goal=GOAL, rows=rows)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
