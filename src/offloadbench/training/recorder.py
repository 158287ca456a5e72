"""One measurement recorder for every run: per-step metrics.jsonl and the peaks for summary.json.

Host memory is the resident set of the training process plus its children's own (unique) memory,
sampled by a thread (psutil) and floored by the kernel's own peak of this process (VmHWM, which
the sampler resets through /proc/self/clear_refs when training begins). GPU memory comes from
torch's allocator counters and, separately, from NVML: bitsandbytes' paged optimizer state is CUDA
managed memory, which torch's counters do not see. Every rank measures its own process; rank 0
writes the metrics and the summary, which lists each rank's peaks (:func:`gather_ranks`).

On a GPU, measured by construction (each a seam that tests/test_gpu_seams.py drives with a fake
``torch.cuda`` and NVML):
- each rank works on its ``LOCAL_RANK`` device (:func:`local_device`), and NVML is opened by that
  device's UUID, never by torch's index, which is another card under ``CUDA_VISIBLE_DEVICES``;
- when training begins (model loaded, engine and optimizer set up) the peaks so far are kept as
  the load peaks (``gpu_load_*``, and the host's ``host_rss_load_peak_bytes``) and then reset, so
  the training peaks do not hold model loading (QLoRA's base passes through host memory unquantized
  while it loads, a peak the training phase never reaches again);
- every timed step window starts and ends with ``torch.cuda.synchronize()``, so it holds the GPU
  work of its step and nothing queued before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
from pathlib import Path

import psutil
from transformers import TrainerCallback

from .procfs import children_uss, io_write_bytes, kernel_peak_rss, proc_status, reset_kernel_peak_rss, tree_rss


def local_device() -> int:
    """This rank's GPU index among the visible ones: LOCAL_RANK under torchrun, else 0."""
    return int(os.environ.get("LOCAL_RANK", 0))


def nvml_handle(pynvml, torch, index: int):
    """NVML's handle of torch's device ``index``, found by its UUID (NVML counts physical cards;
    torch counts the ones CUDA_VISIBLE_DEVICES lets it see), or by PCI bus id where torch gives no UUID."""
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    bus = f"{props.pci_domain_id:08x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"
    return pynvml.nvmlDeviceGetHandleByPciBusId(bus)


def synchronize() -> None:
    """Wait for the GPU's queued work (a timed window's edge); nothing to wait for on a CPU."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class MemorySampler:
    """Samples host memory and NVML used memory in a thread.

    Each tick (100 ms) reads this process's own counters, one read of /proc/self/status: the
    kernel's peak resident set (VmHWM, exact between ticks) and locked memory (VmLck), plus NVML on
    a GPU. Children (DeepSpeed's py-cpuinfo subprocess, compile workers) are found through
    /proc/<pid>/task/*/children and their unique memory read every ``children_every`` ticks. Measured
    here: the thread takes ~0.4% of one core (0.7% at 50 ms ticks; psutil's scan of every process
    for children cost 1 ms a call), and the per-step callbacks ~0.2 ms a step (benchmarks/overhead.py
    measures the whole recorder against none)."""

    def __init__(self, interval_s: float = 0.1, children_every: int = 10):
        self.interval_s = interval_s
        self.children_every = children_every
        self.host_rss_peak = 0
        self.host_locked_peak = 0  # mlocked bytes (VmLck): DeepSpeed's NVMe swap buffers, over the whole run
        self.nvml_used_peak: int | None = None
        self.thread_cpu_s = 0.0  # CPU time the sampling thread has used (time.thread_time in it)
        self._ticks = 0
        self._children_uss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._proc = psutil.Process()
        self._nvml = None
        try:
            import torch

            if torch.cuda.is_available():
                import pynvml

                pynvml.nvmlInit()
                self._nvml = (pynvml, nvml_handle(pynvml, torch, torch.cuda.current_device()))
                self.nvml_used_peak = 0
        except Exception:
            self._nvml = None

    def sample(self, children: bool = True) -> None:
        """One reading; ``children`` False reuses the children's last reading (a tick between scans)."""
        if children:
            self._children_uss = children_uss(self._proc)
        status = proc_status("VmRSS", "VmHWM", "VmLck")
        rss = status.get("VmRSS") or tree_rss(self._proc) - self._children_uss
        self.host_rss_peak = max(self.host_rss_peak, rss + self._children_uss, status.get("VmHWM") or kernel_peak_rss())
        self.host_locked_peak = max(self.host_locked_peak, status.get("VmLck", 0))
        if self._nvml:
            nv, handle = self._nvml
            self.nvml_used_peak = max(self.nvml_used_peak or 0, nv.nvmlDeviceGetMemoryInfo(handle).used)

    def restart_host_peak(self) -> int:
        """The host peak so far; from now on the peak starts again at the current resident set
        (the kernel's own peak too, where /proc/self/clear_refs lets it be reset)."""
        self.sample()
        before = self.host_rss_peak
        reset_kernel_peak_rss()
        self.host_rss_peak = max(tree_rss(self._proc), kernel_peak_rss())
        return before

    def restart_nvml_peak(self) -> int | None:
        """The NVML peak so far; from now on the peak starts again at the current reading."""
        before = self.nvml_used_peak
        if self._nvml:
            nv, handle = self._nvml
            self.nvml_used_peak = nv.nvmlDeviceGetMemoryInfo(handle).used
        return before

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._ticks += 1
            self.sample(children=self._ticks % self.children_every == 0)
            self.thread_cpu_s = time.thread_time()

    def start(self, thread: bool = True) -> MemorySampler:
        """First reading, and the sampling thread unless ``thread`` is False (the recorder switched
        off: the peaks then come from the readings at the start and the end only)."""
        self.sample()
        if thread:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()


def rng_fingerprint() -> dict:
    """The random number generators' states, compactly: torch's initial seed and a SHA-256 of each
    generator's full state (torch CPU, every CUDA device, numpy's global, Python's ``random``).
    Two runs whose fingerprints match drew the same random numbers from there on."""
    import numpy as np
    import torch

    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    cuda = None
    if torch.cuda.is_available():
        cuda = sha(b"".join(s.cpu().numpy().tobytes() for s in torch.cuda.get_rng_state_all()))
    return {
        "torch_initial_seed": int(torch.initial_seed()),
        "torch_sha256": sha(torch.get_rng_state().numpy().tobytes()),
        "cuda_sha256": cuda,
        "numpy_sha256": sha(repr((kind, int(pos), int(has_gauss), float(cached))).encode() + keys.tobytes()),
        "python_sha256": sha(repr(random.getstate()).encode()),
    }


def gather_ranks(entry: dict) -> list[dict]:
    """Every rank's ``entry`` (its own peaks), in rank order; collective: all ranks must call it.

    Goes over the job's torch.distributed group (gloo or NCCL); a single process returns [entry]."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [entry]
    entries: list = [None] * dist.get_world_size()
    dist.all_gather_object(entries, entry)
    return sorted(entries, key=lambda e: e["rank"])


def rank_entry(rank: int, sampler: MemorySampler, baseline: int | None) -> dict:
    """One rank's memory for summary.json's ``ranks``."""
    return {
        "rank": rank,
        "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
        "host": socket.gethostname(),
        "host_rss_baseline_bytes": baseline,
        "host_rss_peak_bytes": sampler.host_rss_peak,
        **gpu_peaks(),
        "gpu_nvml_used_peak_bytes": sampler.nvml_used_peak,
    }


def gpu_peaks() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu_allocated_peak_bytes": None, "gpu_reserved_peak_bytes": None}
    return {
        "gpu_allocated_peak_bytes": torch.cuda.max_memory_allocated(),
        "gpu_reserved_peak_bytes": torch.cuda.max_memory_reserved(),
    }


def start_training_peaks(sampler: MemorySampler) -> dict:
    """Keep the peaks of loading and set-up (``gpu_load_*``, ``host_rss_load_peak_bytes``), then
    reset them for training."""
    import torch

    load = {f"gpu_load_{k[4:]}": v for k, v in gpu_peaks().items()}
    load["gpu_load_nvml_used_peak_bytes"] = sampler.restart_nvml_peak()
    load["host_rss_load_peak_bytes"] = sampler.restart_host_peak()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return load


class MetricsRecorder(TrainerCallback):
    """Writes one JSON line per logged optimizer step to ``metrics.jsonl`` (rank 0 only).

    Time is measured from ``on_step_begin`` to ``on_step_end``: forward, backward and optimizer
    step of every micro-batch, without the checkpoint saves and logging that follow a step, so
    that tokens/s compares with a plain training loop. ``tokens`` counts real tokens: blocks are
    never padded and the dataloader drops a partial last batch, so every optimizer step sees
    micro_batch x accumulation x world_size x block tokens. Storage writes inside the same windows
    are what NVMe offload writes (checkpoints are saved outside them).

    ``per_step`` False switches the per-step work off (timing windows, storage counters, device
    syncs, memory readings, metrics.jsonl) and keeps only the training wall time, ``train_s``: the
    "off" side of benchmarks/overhead.py, which measures what the recorder costs.

    Every run also counts its own recorder's cost inside ``train_s`` (:meth:`cost`): the wall time
    spent in these callbacks outside the step windows, the storage-counter reads inside them, and
    the sampling thread's CPU time. The device syncs are not in it: they wait for the step's own
    work, and what they cost a GPU (no queueing across the step's edge) only the on/off comparison
    of benchmarks/overhead.py can show.
    """

    def __init__(
        self,
        path: str | Path,
        tokens_per_step: int,
        sampler: MemorySampler,
        is_main: bool = True,
        per_step: bool = True,
    ):
        self.path = Path(path)
        self.per_step = per_step
        self.tokens_per_step = tokens_per_step
        self.sampler = sampler
        self.is_main = is_main
        self.step_s = 0.0  # all step windows of this process
        self.steps = 0
        self.io_bytes = 0
        self.train_s = 0.0
        self._thread_cpu_s = 0.0
        self.last_loss = None
        self.rng: dict | None = None  # the RNG states when training starts (rng_fingerprint)
        self.load_peaks: dict = {}  # GPU peaks of loading and set-up (start_training_peaks)
        self._interval_s = 0.0
        self._interval_steps = 0
        self._callbacks_s = 0.0  # wall time of this recorder's own work inside train_s
        self._thread_cpu0 = 0.0
        self._t0 = self._io0 = self._train0 = None
        self.train_begin: float | None = None  # perf_counter when training began (engine set up)

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_begin = time.perf_counter()
        # After Trainer has seeded everything; a resumed run restores its checkpoint's RNG states later.
        self.rng = rng_fingerprint()
        self.load_peaks = start_training_peaks(self.sampler)
        self._thread_cpu0 = self.sampler.thread_cpu_s
        self._train0 = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.per_step:
            return
        synchronize()
        t = time.perf_counter()
        self._io0 = io_write_bytes()
        self._t0 = time.perf_counter()
        self._callbacks_s += self._t0 - t

    def on_step_end(self, args, state, control, **kwargs):
        if not self.per_step:
            self.steps += 1
            return
        synchronize()
        t = time.perf_counter()
        dt = t - self._t0
        self.io_bytes += io_write_bytes() - self._io0
        self.step_s += dt
        self.steps += 1
        self._interval_s += dt
        self._interval_steps += 1
        self._callbacks_s += time.perf_counter() - t

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        t = time.perf_counter()
        try:
            self._log_row(state, logs)
        finally:
            self._callbacks_s += time.perf_counter() - t

    def _log_row(self, state, logs: dict) -> None:
        self.last_loss = float(logs["loss"])
        if self._interval_steps == 0:
            return
        self.sampler.sample(children=False)  # the thread scans for children; this is the step's own reading
        row = {
            "step": state.global_step,
            "loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
            "step_time_s": self._interval_s / self._interval_steps,
            "tokens": self.tokens_per_step * state.global_step,
            "tokens_per_s": self.tokens_per_step * self._interval_steps / self._interval_s,
            "host_rss_peak_bytes": self.sampler.host_rss_peak,
            **gpu_peaks(),
            "gpu_nvml_used_peak_bytes": self.sampler.nvml_used_peak,
        }
        self.last_loss = row["loss"]
        self._interval_steps, self._interval_s = 0, 0.0
        if self.is_main:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        self.train_s = time.perf_counter() - self._train0
        self._thread_cpu_s = self.sampler.thread_cpu_s - self._thread_cpu0

    def cost(self) -> dict:
        """What this recorder cost inside ``train_s``, in seconds and as a share of it (None for a
        run with the recorder off, which has none of it)."""
        if not self.per_step:
            return {"callbacks_s": None, "sampler_cpu_s": None, "share": None}
        spent = self._callbacks_s + self._thread_cpu_s
        return {
            "callbacks_s": self._callbacks_s,
            "sampler_cpu_s": self._thread_cpu_s,
            "share": spent / self.train_s if self.train_s > 0 else None,
        }

    @property
    def tokens_per_s(self) -> float | None:
        seconds = self.step_s if self.per_step else self.train_s
        return self.tokens_per_step * self.steps / seconds if seconds > 0 else None
