"""One measurement recorder for every run: per-step metrics.jsonl and the peaks for summary.json.

Host memory is the resident set of the training process and its children, sampled by a thread
(psutil) and floored by the kernel's own peak of this process (ru_maxrss). GPU memory comes from
torch's allocator counters and, separately, from NVML: bitsandbytes' paged optimizer state is CUDA
managed memory, which torch's counters do not see.
"""

from __future__ import annotations

import json
import resource
import threading
import time
from pathlib import Path

import psutil
from transformers import TrainerCallback


class MemorySampler:
    """Samples host RSS (process tree), NVML used memory and a folder's size in a thread."""

    def __init__(self, interval_s: float = 0.05, watch_dir: str | Path | None = None):
        self.interval_s = interval_s
        self.watch_dir = Path(watch_dir) if watch_dir else None
        self.host_rss_peak = 0
        self.nvml_used_peak: int | None = None
        self.watch_dir_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._proc = psutil.Process()
        self._nvml = None
        try:
            import torch

            if torch.cuda.is_available():
                import pynvml

                pynvml.nvmlInit()
                index = torch.cuda.current_device()
                self._nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(index))
                self.nvml_used_peak = 0
        except Exception:
            self._nvml = None

    def sample(self) -> None:
        rss = 0
        try:
            rss = self._proc.memory_info().rss
            for child in self._proc.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        self.host_rss_peak = max(self.host_rss_peak, rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        if self._nvml:
            nv, handle = self._nvml
            self.nvml_used_peak = max(self.nvml_used_peak or 0, nv.nvmlDeviceGetMemoryInfo(handle).used)
        if self.watch_dir and self.watch_dir.exists():
            size = sum(p.stat().st_size for p in self.watch_dir.rglob("*") if p.is_file())
            self.watch_dir_peak = max(self.watch_dir_peak, size)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()


def gpu_peaks() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"gpu_allocated_peak_bytes": None, "gpu_reserved_peak_bytes": None}
    return {
        "gpu_allocated_peak_bytes": torch.cuda.max_memory_allocated(),
        "gpu_reserved_peak_bytes": torch.cuda.max_memory_reserved(),
    }


class MetricsRecorder(TrainerCallback):
    """Writes one JSON line per logged optimizer step to ``metrics.jsonl`` (rank 0 only).

    ``tokens`` counts real tokens: blocks are never padded and the dataloader drops a partial
    last batch, so every optimizer step sees micro_batch x accumulation x world_size x block tokens.
    """

    def __init__(self, path: str | Path, tokens_per_step: int, sampler: MemorySampler, is_main: bool = True):
        self.path = Path(path)
        self.tokens_per_step = tokens_per_step
        self.sampler = sampler
        self.is_main = is_main
        self.train_start = None
        self.train_s = 0.0
        self.last_step_end = None
        self.interval_steps = 0
        self.interval_s = 0.0
        self.steps_done = 0
        self.last_loss = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_start = self.last_step_end = time.perf_counter()
        self.steps_done = state.global_step  # >0 when resumed from a checkpoint

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        self.interval_s += now - self.last_step_end
        self.interval_steps += 1
        self.last_step_end = now

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs or self.interval_steps == 0:
            return
        self.sampler.sample()
        tokens = self.tokens_per_step * self.interval_steps
        row = {
            "step": state.global_step,
            "loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
            "step_time_s": self.interval_s / self.interval_steps,
            "tokens": self.tokens_per_step * state.global_step,
            "tokens_per_s": tokens / self.interval_s if self.interval_s > 0 else None,
            "host_rss_peak_bytes": self.sampler.host_rss_peak,
            **gpu_peaks(),
            "gpu_nvml_used_peak_bytes": self.sampler.nvml_used_peak,
        }
        self.last_loss = row["loss"]
        self.interval_steps, self.interval_s = 0, 0.0
        if self.is_main:
            with self.path.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
                fh.flush()

    def on_train_end(self, args, state, control, **kwargs):
        self.train_s = time.perf_counter() - self.train_start
        self.steps_done = state.global_step - self.steps_done
