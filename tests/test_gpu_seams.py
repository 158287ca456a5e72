"""GPU measurement correct by construction, checked on the CPU through seams: a fake torch.cuda and
a fake NVML stand in for the card, so a regression in any of them fails in `make test`."""

from __future__ import annotations

import sys
import types

import pytest
import torch
import transformers
from conftest import TINY

from offloadbench.config import load_config
from offloadbench.spec import run_spec
from offloadbench.training import model as model_module
from offloadbench.training import procfs, recorder

GB = 10**9


class FakeCuda:
    """Allocator counters, a queue of GPU work that synchronize() waits for, and device properties."""

    def __init__(self, monkeypatch, devices=("uuid-0", "uuid-1"), uuid=True):
        self.events: list[str] = []
        self.allocated = self.peak = 0
        self.clock = 0.0
        self.queued_s = 0.0  # GPU work launched but not finished
        self.current = 0
        self.devices = devices
        self.uuid = uuid
        cuda = torch.cuda
        for name in (
            "is_available",
            "synchronize",
            "max_memory_allocated",
            "max_memory_reserved",
            "reset_peak_memory_stats",
            "get_device_properties",
            "current_device",
            "set_device",
        ):
            monkeypatch.setattr(cuda, name, getattr(self, name))
        monkeypatch.setattr(recorder.time, "perf_counter", self.perf_counter)
        monkeypatch.setattr(recorder, "rng_fingerprint", lambda: {})

    def is_available(self):
        return True

    def synchronize(self):
        self.events.append("sync")
        self.clock += self.queued_s
        self.queued_s = 0.0

    def perf_counter(self):
        self.events.append("clock")
        return self.clock

    def allocate(self, n):
        self.allocated += n
        self.peak = max(self.peak, self.allocated)

    def max_memory_allocated(self, device=None):
        return self.peak

    def max_memory_reserved(self, device=None):
        return self.peak + GB

    def reset_peak_memory_stats(self, device=None):
        self.events.append("reset")
        self.peak = self.allocated

    def get_device_properties(self, index):
        if self.uuid:
            return types.SimpleNamespace(uuid=self.devices[index])
        return types.SimpleNamespace(pci_domain_id=0, pci_bus_id=0x17 + index, pci_device_id=0)

    def current_device(self):
        return self.current

    def set_device(self, index):
        self.current = index


def fake_nvml(monkeypatch, used=3 * GB):
    calls = []
    nv = types.ModuleType("pynvml")
    nv.nvmlInit = lambda: None
    nv.nvmlDeviceGetHandleByUUID = lambda uuid: calls.append(("uuid", uuid)) or uuid
    nv.nvmlDeviceGetHandleByPciBusId = lambda bus: calls.append(("pci", bus)) or bus
    nv.nvmlDeviceGetHandleByIndex = lambda i: pytest.fail(
        "NVML opened by torch's index (wrong card under CUDA_VISIBLE_DEVICES)"
    )
    nv.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=nv.used)
    nv.used = used
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    return nv, calls


def test_nvml_is_opened_by_the_uuid_of_this_ranks_device(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    _, calls = fake_nvml(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")
    torch.cuda.set_device(recorder.local_device())
    recorder.MemorySampler()
    assert calls == [("uuid", "GPU-uuid-1")]
    assert cuda.current == 1


def test_without_a_uuid_nvml_is_opened_by_pci_bus_id(monkeypatch):
    FakeCuda(monkeypatch, uuid=False)
    _, calls = fake_nvml(monkeypatch)
    recorder.MemorySampler()
    assert calls == [("pci", "00000000:17:00.0")]


def test_every_timed_window_is_bounded_by_synchronize_so_queued_gpu_work_is_counted(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    fake_nvml(monkeypatch)
    rec = recorder.MetricsRecorder("/dev/null", 1024, recorder.MemorySampler(), is_main=False)
    rec.on_train_begin(None, None, None)
    cuda.queued_s = 5.0  # work queued before the step: not the step's
    cuda.events.clear()
    rec.on_step_begin(None, None, None)
    assert cuda.events[:2] == ["sync", "clock"], "the window must start after the queue drains"
    cuda.queued_s = 0.25  # the step's kernels, still running when Python reaches on_step_end
    rec.on_step_end(None, None, None)
    assert rec.step_s == pytest.approx(0.25), "the step's GPU time is inside its window, the earlier work is not"


def test_training_peaks_do_not_hold_model_loading_which_is_kept_apart(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    nv, _ = fake_nvml(monkeypatch, used=12 * GB)
    sampler = recorder.MemorySampler()
    sampler.sample()  # the NVML reading while the whole model sat on the card
    cuda.allocate(10 * GB)  # a whole 4-bit model on the card before partitioning ...
    cuda.allocated -= 8 * GB  # ... of which 8 GB are freed once ZeRO-3 has partitioned it
    rec = recorder.MetricsRecorder("/dev/null", 1024, sampler, is_main=False)
    nv.used = 4 * GB
    rec.on_train_begin(None, None, None)
    assert "reset" in cuda.events
    assert rec.load_peaks["gpu_load_allocated_peak_bytes"] == 10 * GB
    assert rec.load_peaks["gpu_load_nvml_used_peak_bytes"] == 12 * GB
    cuda.allocate(2 * GB)  # training: activations and optimizer state
    nv.used = 6 * GB
    sampler.sample()
    assert recorder.gpu_peaks()["gpu_allocated_peak_bytes"] == 4 * GB
    assert sampler.nvml_used_peak == 6 * GB


def test_the_host_training_peak_does_not_hold_model_loading_which_is_kept_apart():
    """QLoRA's base passes through host memory unquantized while it loads: 300 MB held and freed
    before training stay in host_rss_load_peak_bytes and out of the training peak, the kernel's
    own peak (VmHWM) included, which no sampler can lower by itself."""
    import numpy as np

    sampler = recorder.MemorySampler()
    sampler.sample()
    before = procfs.kernel_peak_rss()
    loading = np.ones(300 * 2**20, dtype=np.uint8)  # touched: resident
    sampler.sample()
    del loading
    rec = recorder.MetricsRecorder("/dev/null", 1024, sampler, is_main=False)
    rec.on_train_begin(None, None, None)
    load = rec.load_peaks["host_rss_load_peak_bytes"]
    assert load >= before + 290 * 2**20
    assert sampler.host_rss_peak < load - 250 * 2**20, "the training peak still holds the load"
    assert procfs.kernel_peak_rss() < load - 250 * 2**20, "VmHWM was not reset"
    training = np.ones(100 * 2**20, dtype=np.uint8)
    sampler.sample()
    assert sampler.host_rss_peak >= procfs.tree_rss() - 2**20 and training.sum() > 0


@pytest.mark.parametrize("local_rank", ["0", "1", "3"])
def test_qlora_without_deepspeed_loads_on_this_ranks_gpu(monkeypatch, local_rank):
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    seen = {}

    class Stop(Exception):
        pass

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", staticmethod(from_pretrained))
    spec = run_spec(load_config(TINY), "qlora")
    with pytest.raises(Stop):
        model_module.load_model(spec, "cuda", "bf16", zero3=False)
    assert seen["device_map"] == {"": int(local_rank)}
