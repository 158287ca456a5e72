"""The CPU benchmarks judge on their repeats' spread, not on one lucky or unlucky run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return load("throughput")


def test_a_ratio_clear_of_the_target_beyond_the_spread_is_met_or_missed(throughput):
    plain = [1000.0, 1010.0, 990.0, 1005.0, 995.0]
    assert throughput.judge(plain, [980.0, 975.0, 985.0, 990.0, 970.0])["verdict"] == "met"
    slow = throughput.judge(plain, [800.0, 810.0, 790.0, 805.0, 795.0])
    assert slow["verdict"] == "missed" and slow["ratio"] == pytest.approx(0.8)


def test_a_ratio_inside_the_noise_is_undecided_not_met(throughput):
    """Medians 0.92 apart but repeats that swing by 20%: the best-of-n of the old benchmark would
    have called this met; the interval straddles 0.9."""
    plain = [1000.0, 1200.0, 800.0, 1100.0, 900.0]
    ours = [920.0, 1150.0, 760.0, 1000.0, 700.0]
    got = throughput.judge(plain, ours)
    assert got["verdict"] == "undecided" and got["ratio_low"] < 0.9 < got["ratio_high"]


def test_recorder_overhead_is_judged_on_its_interval():
    sys.path.insert(0, str(REPO / "benchmarks"))  # overhead.py imports its sibling throughput.py
    overhead = load("overhead")
    off = [10.0, 10.1, 9.9, 10.05, 9.95]
    assert overhead.judge([10.1, 10.15, 10.05, 10.2, 10.1], off)["verdict"] == "met"  # +1%
    slow = overhead.judge([11.0, 11.1, 10.9, 11.05, 10.95], off)  # +10%
    assert slow["verdict"] == "missed" and slow["overhead"] == pytest.approx(0.1)
    noisy = overhead.judge([10.3, 12.0, 8.5, 11.0, 9.2], [10.0, 11.5, 8.0, 10.6, 9.4])
    assert noisy["verdict"] == "undecided" and noisy["overhead_low"] < 0.03 < noisy["overhead_high"]


@pytest.mark.parametrize("script", ["throughput", "scaling", "overhead"])
def test_fewer_than_three_repeats_are_refused(script):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"{script}.py"), "--repeats", "2"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "--repeats must be at least 3" in proc.stderr


def test_the_recorders_counted_cost_is_judged_on_its_largest_repeat():
    sys.path.insert(0, str(REPO / "benchmarks"))
    overhead = load("overhead")
    assert overhead.judge_direct([0.004, 0.006, 0.005])["direct_verdict"] == "met"
    assert overhead.judge_direct([0.004, 0.031, 0.005])["direct_verdict"] == "undecided"
    missed = overhead.judge_direct([0.05, 0.04, 0.06])
    assert missed["direct_verdict"] == "missed" and missed["direct"] == pytest.approx(0.05)
