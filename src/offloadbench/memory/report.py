"""The README's hardware table (hardware_table): per run of a profile, predicted GPU, host, NVMe and
disk needs and an estimated training time on one GPU class, with its byte and duration
formatting."""

from __future__ import annotations

from ..spec import declared_runs, run_spec
from .estimate import H100, estimate_time
from .measured import gpu_needed
from .predict import predict, predicted_disk_bytes
from .units import GiB, MiB


def _size(n: float) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (1024, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}" if unit == GiB else f"{n / unit:.0f} {name}"
    return "0" if n == 0 else f"{n:.0f} B"


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else (f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s")


def hardware_table(config: dict, model_config: dict, gpu: dict = H100) -> str:
    """Markdown: per run of a profile, predicted GPU, host, NVMe and disk needs and an estimated
    training time on one ``gpu``; a run whose GPU prediction (training or load peak) exceeds the card is
    marked OOM."""
    rows, totals = [], {"host": 0, "gpu": 0, "final": 0, "disk": 0, "seconds": 0.0}
    for name in declared_runs(config):  # a sweep's points have other models: not this table
        spec = run_spec(config, name)
        block = spec.get("block_size") or config["dataset"]["block_size"]
        full = predict(spec, model_config, block, "cuda")
        pred = full["predicted"]
        disk = predicted_disk_bytes(spec, model_config, block, "cuda")
        t = estimate_time(spec, model_config, block, gpu)
        fits = gpu_needed(full) <= gpu["memory_bytes"]
        time = f"{_duration(t['seconds'])} ({t['bound']})" if fits else "— (does not fit: OOM expected)"
        rows.append(
            f"| {spec['run']} | {spec['method']} | {spec['training']['max_steps']} | "
            f"{_size(pred['gpu']['total'])}{'' if fits else ' ✗'} | "
            f"{_size(pred['host']['total'])} | {_size(pred['nvme']['total'])} | {_size(disk['final_model'])} | "
            f"{_size(disk['total'])} | {time} |"
        )
        totals["gpu"] = max(totals["gpu"], pred["gpu"]["total"])
        totals["host"] = max(totals["host"], pred["host"]["total"])
        totals["final"] += disk["final_model"]
        totals["disk"] = max(totals["disk"], disk["total"] - disk["final_model"])
        totals["seconds"] += t["seconds"] if fits else 0
    block = config["dataset"]["block_size"]
    head = [
        f"Predicted per run on one {gpu['name']} ({config['model']['name']}, block {block}; steps: each run's "
        "optimizer steps). Memory is counted from the model config (python -m offloadbench.memory); "
        "time is a **model estimate, not a measurement**: "
        f"{gpu['bf16_flops'] / 1e12:.0f} TFLOPS bf16 at an assumed {gpu['mfu']:.0%} MFU, "
        f"PCIe {gpu['pcie_bytes_per_s'] / 1e9:.0f} GB/s, NVMe {gpu['nvme_bytes_per_s'] / 1e9:.0f} GB/s.",
        "",
        "| run | method | steps | GPU (peak allocated) | host RAM (peak) | NVMe swap | final checkpoint | "
        "disk at peak | est. time on H100 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = (
        f"| **all runs** | | | {_size(totals['gpu'])} (max) | {_size(totals['host'])} (max) | | "
        f"{_size(totals['final'])} (sum) | {_size(totals['final'] + totals['disk'])} | "
        f"{_duration(totals['seconds'])} (runs that fit) |"
    )
    foot = [
        "",
        "GPU: tensors only; add the CUDA context (~0.5 GiB) and allocator slack. Host: without the Python/torch "
        "runtime (~0.5 GiB on CPU). Disk at peak: NVMe swap + final model + the resume checkpoints kept while "
        "training; the all-runs line: every final model plus the largest transient of one run.",
    ]
    return "\n".join(head + rows + [total] + foot) + "\n"
