"""Throughput with its spread: a speed difference inside the noise is not a result.

Each run logs every optimizer step's tokens/s (metrics.jsonl). The first ``WARMUP_STEPS`` logged
steps are left out everywhere a spread or a ratio is computed (allocator growth, lazy set-up, the
first calls into DeepSpeed's ops); the rest are the run's repeated measurements. A speed ratio
between two runs is the ratio of their median tokens/s, with a percentile-bootstrap interval over
their steps (each run's steps resampled on their own, a fixed seed, so the interval is
reproducible). A speed claim passes only when the whole interval clears its factor.

The interval is the spread *within* the two runs. Runs made at different times on a shared machine
also differ by what else the machine did meanwhile (up to 22% between two runs of the same code
here), which no single pair of runs can show; that takes repeated runs (docs/benchmarks.md).
Standard library only.
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

WARMUP_STEPS = 2  # logged steps left out at the start of every run
MIN_STEPS = 5  # fewer steady steps than this: no spread to speak of
CONFIDENCE = 0.95
RESAMPLES = 2000


def steady_rates(run_dir: Path) -> list[float]:
    """tokens/s of each logged step after the warm-up (empty without metrics)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    return rates[WARMUP_STEPS:]


def spread(rates: list[float]) -> dict:
    """Median, quartiles and n of a run's steady steps."""
    if len(rates) < 2:
        return {"median": rates[0] if rates else None, "q1": None, "q3": None, "n": len(rates)}
    q1, _, q3 = statistics.quantiles(rates, n=4)
    return {"median": statistics.median(rates), "q1": q1, "q3": q3, "n": len(rates)}


def ratio_interval(a: list[float], b: list[float], seed: int = 0) -> tuple[float, float, float]:
    """median(a) / median(b) and its ``CONFIDENCE`` bootstrap interval (low, high)."""
    rng = random.Random(seed)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(RESAMPLES)
    )
    tail = (1 - CONFIDENCE) / 2
    low, high = ratios[int(tail * RESAMPLES)], ratios[int((1 - tail) * RESAMPLES) - 1]
    return statistics.median(a) / statistics.median(b), low, high


def judge_at_most(a: list[float], b: list[float], factor: float) -> dict:
    """Is a's throughput at most ``factor`` x b's, beyond the spread? verdict PASS (the whole
    interval is at most factor), FAIL (the whole interval is above it), or undecided."""
    if min(len(a), len(b)) < MIN_STEPS:
        return {"verdict": "undecided", "n": [len(a), len(b)], "why": f"fewer than {MIN_STEPS} steady steps"}
    ratio, low, high = ratio_interval(a, b)
    verdict = "PASS" if high <= factor else "FAIL" if low > factor else "undecided"
    return {"verdict": verdict, "ratio": ratio, "low": low, "high": high, "n": [len(a), len(b)]}
