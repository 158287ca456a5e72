"""A training process never outlives the workflow that started it.

torchrun starts its workers in a session of their own, so a SIGKILL of Snakemake, of its process
group or of torchrun leaves them training and writing into the run folder after the workflow is
gone. Two guards, both started before anything is loaded:

- the ``train`` rule exports ``OFFLOADBENCH_WATCH_PID`` (the Snakemake process that runs the job);
  a thread checks once a second that this process still exists (same pid, same start time) and
  ends this one when it does not, without writing a summary, so the next run resumes from the
  last complete checkpoint; the run checks once more right before it publishes its outputs
  (:func:`stop_if_gone`). The start time is the kernel's count of clock ticks since boot, never
  a wall-clock time: ``psutil.Process.create_time()`` adds ``/proc/stat``'s ``btime``, which moves
  by a second when the clock is adjusted (NTP), and a watchdog comparing it once killed a healthy
  run in CI;
- a worker under torchrun asks the kernel to kill it when its parent (torchrun) dies
  (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

import psutil

PR_SET_PDEATHSIG = 1  # linux/prctl.h
ENV = "OFFLOADBENCH_WATCH_PID"


def _identity(pid: int) -> float | None:
    """The process's start, in clock ticks since boot (Linux), or None when there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # Field 22 (starttime); the command name (field 2) may hold spaces and parentheses.
        return float(stat[stat.rindex(b")") + 2 :].split()[19])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, IndexError):
        pass  # no /proc: ask psutil, whose create_time is stable where there is no btime to move
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


_WATCHED: dict[str, float] = {}  # pid -> start ticks, of the workflow this process serves


def watch(pid: int, interval_s: float = 1.0) -> threading.Thread | None:
    """End this process (exit code 143, as a SIGTERM would) once ``pid`` is gone."""
    born = _identity(pid)
    if born is None:
        return None
    _WATCHED[str(pid)] = born

    def loop() -> None:
        while True:
            threading.Event().wait(interval_s)
            stop_if_gone()

    thread = threading.Thread(target=loop, name="workflow-watchdog", daemon=True)
    thread.start()
    return thread


def stop_if_gone() -> None:
    """End this process now if the workflow it serves is gone. Called by the watchdog's thread
    every second, and by the run right before it publishes anything (model, metrics, summary): the
    last steps and the evaluation can finish inside the second after a kill, and a summary written
    then would mark as done a run whose workflow never saw it finish."""
    for pid, born in _WATCHED.items():
        if _identity(int(pid)) != born:
            print(f"[offloadbench] the workflow (pid {pid}) is gone: stopping", file=sys.stderr, flush=True)
            os._exit(128 + signal.SIGTERM)


def die_with_parent() -> bool:
    """Linux: SIGKILL this process when its parent exits. Returns whether the kernel agreed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def start() -> None:
    if "LOCAL_RANK" in os.environ:  # a torchrun worker
        die_with_parent()
    if os.environ.get(ENV, "").isdigit():
        watch(int(os.environ[ENV]))
