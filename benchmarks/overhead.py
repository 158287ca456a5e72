"""What does measuring cost? The training rule with its recorder on and off, on the same runs.

    make run                                  # the default workflow prepares data and base models
    .venv/bin/python benchmarks/overhead.py   # 5 alternating repeats of 4 runs, ~8 minutes on 2 cores
    .venv/bin/python benchmarks/overhead.py --runs lora --repeats 9 --out results/reference/default/overhead.json

"On" is the run as the workflow trains it: the memory sampler's thread (50 ms ticks), the per-step
timing windows with their device syncs and storage counters, and a metrics.jsonl line per step.
"Off" is the same ``python -m offloadbench.train`` with OFFLOADBENCH_RECORDER=off: no thread and
none of the per-step work (training/recorder.py). Both sides are timed the same way, the wall time
of ``trainer.train()`` (summary.json ``train_s``: every step, logging and checkpoint saves), each
in a fresh process, alternating on/off so that a slow minute of the machine hits both alike.

Per run: the median ``train_s`` of each side with its range, and the overhead, on / off - 1 of the
medians, with its 95% bootstrap interval over the repeats (offloadbench.speed.ratio_interval). The
goal is at most 3%, judged on the interval: met (all of it at most 3%), missed (all of it above),
undecided (it straddles 3%: too noisy for this many repeats). Exit status 0 / 1 / 3 for all met /
one missed / none missed but one undecided; 2 when the inputs are missing.

Beside it, the recorder's direct cost as every "on" run counts it (summary.json ``recorder_cost``:
its callbacks' wall time and its sampling thread's CPU time inside ``train_s``), median and range
over the repeats, judged against the same 3% on its largest value. It has far less noise than the
on/off difference, but leaves out what only that difference shows (caches, thread wake-ups, and on a
GPU the device syncs at the step windows' edges).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

from throughput import REPO, exit_status, rule_summary, workflow_inputs, write_record

from offloadbench import speed
from offloadbench.env import prepare_process
from offloadbench.resolve import resolve_spec

GOAL = 0.03  # at most 3% of the training time


def judge(on: list[float], off: list[float]) -> dict:
    ratio, low, high = speed.ratio_interval(on, off)
    verdict = "met" if high - 1 <= GOAL else "missed" if low - 1 > GOAL else "undecided"
    return {"overhead": ratio - 1, "overhead_low": low - 1, "overhead_high": high - 1, "verdict": verdict}


def judge_direct(shares: list[float]) -> dict:
    """The recorder's own counted cost over the "on" repeats: met when even the largest is within
    the goal, missed when even the smallest is above it."""
    verdict = "met" if max(shares) <= GOAL else "missed" if min(shares) > GOAL else "undecided"
    return {
        "direct": statistics.median(shares),
        "direct_min": min(shares),
        "direct_max": max(shares),
        "direct_verdict": verdict,
    }


def row_text(row: dict) -> str:
    on, off = row["on_train_s"], row["off_train_s"]
    return (
        f"{row['run']:16s} on {statistics.median(on):6.2f} s [{min(on):.2f}-{max(on):.2f}]"
        f"   off {statistics.median(off):6.2f} s [{min(off):.2f}-{max(off):.2f}]"
        f"   overhead {100 * row['overhead']:+.1f}% (95% {100 * row['overhead_low']:+.1f}% to "
        f"{100 * row['overhead_high']:+.1f}%, n={len(on)})   {row['verdict']}"
        f"   direct {100 * row['direct']:.2f}% [{100 * row['direct_min']:.2f}-{100 * row['direct_max']:.2f}%]"
        f"   {row['direct_verdict']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["full", "lora", "qlora", "qlora_offload"])
    parser.add_argument("--repeats", type=int, default=5, help="alternating on/off pairs per run (at least 3)")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: fewer give no interval to judge the overhead on")
    prepare_process()
    found = workflow_inputs(args.runs, args.results)
    if found is None:
        return 2
    data_dir, specs = found
    rows = []
    for name, spec in specs.items():
        spec = resolve_spec(spec)
        on, off, shares = [], [], []
        for _ in range(args.repeats):
            for side, env in ((on, {}), (off, {"OFFLOADBENCH_RECORDER": "off"})):
                summary = rule_summary(spec, data_dir, env)
                assert summary["recorder"] == ("off" if env else "on"), summary["recorder"]
                side.append(summary["train_s"])
                if not env:
                    shares.append(summary["recorder_cost"]["share"])
        rows.append(
            {
                "run": name,
                "on_train_s": on,
                "off_train_s": off,
                "on_recorder_share": shares,
                **judge(on, off),
                **judge_direct(shares),
            }
        )
        print(row_text(rows[-1]), flush=True)
    if args.out:
        write_record(args.out, threads=os.cpu_count(), goal=GOAL, rows=rows)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
