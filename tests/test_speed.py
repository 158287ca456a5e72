"""Speed verdicts on repeated measurements: PASS only when the ratio clears the factor beyond the spread."""

from __future__ import annotations

import json
import random

import pytest
from conftest import write_run

from offloadbench import speed
from offloadbench.claims import check_claims

CLAIM = {
    "id": "C2",
    "statement": "offload costs some speed",
    "check": "at_most",
    "run": "slow",
    "against": ["fast"],
    "metrics": ["tokens_per_s"],
    "factor": 0.95,
}


def noisy(center: float, rel_noise: float, n: int = 40, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-rel_noise, rel_noise)) for _ in range(n)]


def runs(tmp_path, slow_rates, fast_rates):
    for run, rates in (("slow", slow_rates), ("fast", fast_rates)):
        write_run(tmp_path, run, tokens_per_s=sum(rates) / len(rates))
        rows = [{"step": i, "step_time_s": 1.0, "tokens_per_s": r} for i, r in enumerate(rates, 1)]
        (tmp_path / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return check_claims([CLAIM], tmp_path, None, ["slow", "fast"])[0]


def test_a_clear_slowdown_passes_with_its_interval(tmp_path):
    claim = runs(tmp_path, noisy(900, 0.02), noisy(1400, 0.02, seed=2))
    assert claim["verdict"] == "PASS", claim["reason"]
    numbers = claim["numbers"]["tokens_per_s: slow / fast"]
    assert numbers["ratio"] == pytest.approx(900 / 1400, rel=0.02) and numbers["steps"] == [38, 38]
    assert "95% interval" in claim["reason"]


def test_a_slowdown_inside_the_noise_is_neither_pass_nor_fail(tmp_path):
    """0.90x on average, as one number per run would PASS; with +-25% step to step it is noise."""
    slow, fast = noisy(900, 0.25, n=12), noisy(1000, 0.25, n=12, seed=2)
    assert sum(slow) / len(slow) < 0.95 * sum(fast) / len(fast), "the single-number ratio would pass"
    claim = runs(tmp_path, slow, fast)
    assert claim["verdict"] == "N/A" and "inside the measured spread" in claim["reason"]


def test_no_slowdown_fails(tmp_path):
    claim = runs(tmp_path, noisy(1000, 0.02), noisy(1000, 0.02, seed=2))
    assert claim["verdict"] == "FAIL" and "tokens/s of slow is" in claim["reason"]


def test_too_few_steps_decide_nothing(tmp_path):
    claim = runs(tmp_path, [900.0] * (speed.WARMUP_STEPS + 3), [1400.0] * 40)
    assert claim["verdict"] == "N/A" and "fewer than 5 steady steps" in claim["reason"]


def test_warm_up_steps_are_left_out(tmp_path):
    """A slow first step (JIT, allocator) must not decide a speed claim."""
    slow = [100.0, 100.0] + noisy(1000, 0.02)
    assert runs(tmp_path, slow, noisy(1000, 0.02, seed=2))["verdict"] == "FAIL"


def test_the_interval_is_reproducible_and_contains_the_ratio():
    a, b = noisy(900, 0.1), noisy(1000, 0.1, seed=2)
    first, second = speed.ratio_interval(a, b), speed.ratio_interval(a, b)
    assert first == second
    ratio, low, high = first
    assert low < ratio < high


def test_spread_gives_median_quartiles_and_n():
    got = speed.spread([1.0, 2.0, 3.0, 4.0, 5.0])
    assert got["median"] == 3.0 and got["n"] == 5 and got["q1"] < 3.0 < got["q3"]
