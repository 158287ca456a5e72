"""The recorder counts its own cost inside the training time, and a job's start-up, so that every
run says what measuring it cost; each test makes that cost large on purpose and checks it shows."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from offloadbench.training import procfs, recorder


def busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def train(rec: recorder.MetricsRecorder, steps: int, step_s: float) -> None:
    """What Trainer calls around ``steps`` optimizer steps of ``step_s`` each, one log line a step."""
    rec.on_train_begin(None, None, None)
    state = type("State", (), {"global_step": 0})()
    for _ in range(steps):
        rec.on_step_begin(None, state, None)
        time.sleep(step_s)
        state.global_step += 1
        rec.on_step_end(None, state, None)
        rec.on_log(None, state, None, logs={"loss": 1.0, "learning_rate": 1e-3})
    rec.on_train_end(None, state, None)


@pytest.mark.parametrize("slow_s", [0.0, 0.01])
def test_the_recorders_own_work_is_counted_outside_the_step_windows(monkeypatch, tmp_path, slow_s):
    """A storage-counter read that takes ``slow_s`` (twice a step) is the recorder's cost: it shows
    in ``callbacks_s`` and the share, and not in the step windows that tokens/s is computed from."""
    real = recorder.io_write_bytes

    def slow_read():
        time.sleep(slow_s)
        return real()

    monkeypatch.setattr(recorder, "io_write_bytes", slow_read)
    rec = recorder.MetricsRecorder(tmp_path / "m.jsonl", 512, recorder.MemorySampler(), is_main=True)
    train(rec, steps=8, step_s=0.02)
    cost = rec.cost()
    assert rec.step_s == pytest.approx(8 * 0.02, rel=0.3)
    assert cost["callbacks_s"] >= 16 * slow_s
    assert cost["callbacks_s"] < 16 * slow_s + 0.05
    assert cost["share"] == pytest.approx((cost["callbacks_s"] + cost["sampler_cpu_s"]) / rec.train_s)
    if slow_s:
        assert cost["share"] > 0.3  # 0.16 s of reads in ~0.33 s of training
    else:
        assert cost["share"] < 0.1
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 8


def test_the_sampling_threads_cpu_time_is_counted(monkeypatch, tmp_path):
    """A sampler that burns 5 ms of CPU a tick (10 ms ticks) costs a third of a core or more; it
    shows in ``sampler_cpu_s``; the same ticks without the burn cost a small part of that."""
    measured = {}
    real = recorder.proc_status
    for burn in (0.0, 0.005):

        def status(*keys, burn=burn):
            busy(burn)
            return real(*keys)

        monkeypatch.setattr(recorder, "proc_status", status)
        sampler = recorder.MemorySampler(interval_s=0.01).start()
        rec = recorder.MetricsRecorder(tmp_path / f"{burn}.jsonl", 512, sampler, is_main=False)
        train(rec, steps=20, step_s=0.05)
        sampler.stop()
        measured[burn] = rec.cost()["sampler_cpu_s"]
    assert measured[0.005] > 0.15, measured  # ~65 ticks of 5 ms in 1 s of training
    assert measured[0.0] < measured[0.005] / 3, measured


def test_with_the_recorder_off_it_reports_no_cost():
    rec = recorder.MetricsRecorder("/dev/null", 512, recorder.MemorySampler(), is_main=False, per_step=False)
    train(rec, steps=3, step_s=0.001)
    assert rec.cost() == {"callbacks_s": None, "sampler_cpu_s": None, "share": None}


def test_process_age_counts_from_the_processs_start():
    """A process that sleeps before asking is at least that old, and not much older."""
    code = (
        "import time; time.sleep(0.6); from offloadbench.training.procfs import process_age_s; print(process_age_s())"
    )
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    elapsed = time.perf_counter() - t0
    age = float(out.stdout)
    assert 0.6 <= age <= elapsed + 0.02


def test_process_age_reads_a_name_with_spaces_and_parentheses(tmp_path):
    ticks = os.sysconf("SC_CLK_TCK")
    started = time.clock_gettime(time.CLOCK_BOOTTIME) - 5.0
    fields = ["S"] + ["0"] * 18 + [str(int(started * ticks))] + ["0"] * 30
    stat = tmp_path / "stat"
    stat.write_text("4242 (a) b (c)) " + " ".join(fields) + "\n")
    assert procfs.process_age_s(str(stat)) == pytest.approx(5.0, abs=0.05)
    assert procfs.process_age_s(str(tmp_path / "missing")) is None
