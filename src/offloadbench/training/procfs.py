"""What the kernel says about this process: resident and peak memory, its children's own memory,
its storage writes and its age (Linux /proc, with psutil where /proc does not say)."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import psutil


def proc_status(*keys: str) -> dict[str, int]:
    """Byte counts of /proc/self/status lines (``VmHWM: 123 kB``) in one read; {} where there is none."""
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in keys:
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out


def process_age_s(stat: str = "/proc/self/stat") -> float | None:
    """Seconds since this process started (the kernel's start time, 10 ms ticks, against the boot
    clock it is counted on); None where /proc does not say. Not psutil's create_time: it adds the
    start to the boot time, which /proc/stat gives in whole seconds, so its age is off by up to 1 s."""
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of proc(5); 20 after the name
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def kernel_peak_rss() -> int:
    """This process's peak resident set as the kernel counts it (VmHWM; ru_maxrss elsewhere), which
    catches a peak between two samples."""
    return proc_status("VmHWM").get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_kernel_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0: ``5`` to /proc/self/clear_refs).
    False where that is not allowed: the kernel's peak then still holds what came before."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def tree_rss(proc: psutil.Process | None = None) -> int:
    """Resident bytes of a process (this one by default) plus its children's own memory.

    Children count with their unique set size: a child forked from the training process (DeepSpeed
    runs py-cpuinfo in a subprocess when it loads its CPU Adam op) shares all of the parent's pages
    until it execs, and its RSS would count them a second time."""
    proc = proc or psutil.Process()
    try:
        return proc.memory_info().rss + children_uss(proc)
    except psutil.Error:
        return 0


def child_pids(pid: int | str = "self") -> list[int]:
    """This process's children and theirs, from /proc/<pid>/task/*/children (Linux: a read per
    thread, where psutil.Process.children scans every process of the machine, ~50x slower here)."""
    out = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            kids = [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        for kid in kids:
            out += [kid, *child_pids(kid)]
    return out


def children_uss(proc: psutil.Process) -> int:
    """The unique set size of a process's children, recursively (0 when it has none)."""
    pids = child_pids(proc.pid)
    if not pids and not Path("/proc/self/task").is_dir():  # no /proc: ask psutil
        try:
            pids = [c.pid for c in proc.children(recursive=True)]
        except psutil.Error:
            return 0
    uss = 0
    for pid in pids:
        try:
            uss += psutil.Process(pid).memory_full_info().uss
        except psutil.Error:
            pass
    return uss


_SELF = psutil.Process()


def io_write_bytes() -> int:
    """Bytes this process has written to storage (O_DIRECT aio writes included), where Linux says."""
    try:
        return _SELF.io_counters().write_bytes
    except (psutil.Error, AttributeError):
        return 0
