"""The workflow watchdog ends a training job when, and only when, the workflow is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from offloadbench.training import watchdog

CHILD = textwrap.dedent(
    """
    import sys, time, itertools
    import psutil
    from offloadbench.training import watchdog
    ticks = itertools.count()
    # A clock that NTP adjusts: /proc/stat's btime moves by a second on every read.
    moving = lambda: 1.7e9 + next(ticks) % 2
    psutil.boot_time = moving
    if hasattr(psutil, "_pslinux"):
        psutil._pslinux.boot_time = moving  # what Process.create_time() adds
    watchdog.watch(int(sys.argv[1]), interval_s=0.05)
    time.sleep(float(sys.argv[2]))
    """
)


def run_child(pid: int, seconds: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(pid), str(seconds)], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_living_workflow_is_not_taken_for_gone_when_the_wall_clock_moves():
    done = run_child(os.getpid(), 1.0)
    assert done.returncode == 0, done.stderr
    assert "is gone" not in done.stderr


def test_a_gone_workflow_stops_the_job_with_sigterms_code():
    workflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    threading.Thread(target=workflow.wait, daemon=True).start()  # reaped as its parent would
    started = time.monotonic()
    done = run_child(workflow.pid, 30.0)
    workflow.wait()
    assert done.returncode == 143, done.stderr
    assert f"the workflow (pid {workflow.pid}) is gone" in done.stderr
    assert time.monotonic() - started < 20


def test_identity_is_ticks_since_boot_and_none_for_no_such_process():
    me = watchdog._identity(os.getpid())
    assert me is not None and me == watchdog._identity(os.getpid())
    if os.path.exists("/proc/self/stat"):
        import psutil

        since_boot = psutil.Process().create_time() - psutil.boot_time()
        assert me / os.sysconf("SC_CLK_TCK") == pytest.approx(since_boot, abs=1.5)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert watchdog._identity(dead.pid) is None


PUBLISH = textwrap.dedent(
    """
    import sys, pathlib
    from offloadbench.training import watchdog
    watchdog.watch(int(sys.argv[1]), interval_s=3600)  # the thread would look only in an hour
    input()  # the workflow is killed meanwhile (the parent closes stdin after that)
    watchdog.stop_if_gone()
    pathlib.Path(sys.argv[2]).write_text("summary")
    """
)


@pytest.mark.parametrize("killed", [True, False])
def test_nothing_is_published_once_the_workflow_is_gone_even_between_two_looks(tmp_path, killed):
    """The last steps and the evaluation can end inside the watchdog's second: the run checks once
    more right before it publishes, so a killed workflow never gets a summary it did not see."""
    workflow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    summary = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    job = subprocess.Popen(
        [sys.executable, "-c", PUBLISH, str(workflow.pid), str(summary)],
        env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.0)  # the job is watching
    if killed:
        workflow.kill()
        workflow.wait()
    _, err = job.communicate("\n", timeout=60)
    workflow.kill()
    assert (job.returncode, summary.exists()) == ((143, False) if killed else (0, True)), err
