"""The paper's figures (src/offloadbench/figures.py), on synthetic runs: a GPU run with a memory
model, one without, an OOM, a failure, a CPU run and a run that left nothing."""

from __future__ import annotations

import json
import math

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba

from offloadbench import figures

GIB = 2**30
RUNS = ["full", "lora", "qlora_offload", "zero3", "cpu_run", "missing"]


def metrics(n: int, start: float = 3.0, gpu: bool = True) -> list[dict]:
    peak = 10 * GIB if gpu else None
    return [
        {"step": i, "loss": start - 0.05 * i, "learning_rate": 1e-4, "grad_norm": 1.0, "step_time_s": 0.5,
         "tokens": 1024 * i, "tokens_per_s": 2048.0, "host_rss_peak_bytes": GIB, "gpu_allocated_peak_bytes": peak,
         "gpu_reserved_peak_bytes": peak, "gpu_nvml_used_peak_bytes": peak}
        for i in range(1, n + 1)
    ]  # fmt: skip


def summary(run: str, **overrides) -> dict:
    out = {
        "run": run, "method": "lora", "offload": "none", "status": "ok", "error": None, "device": "cuda",
        "steps": 10, "tokens_per_s": 2000.0, "host_rss_peak_bytes": 4 * GIB, "gpu_allocated_peak_bytes": 17 * GIB,
        "gpu_reserved_peak_bytes": 19 * GIB, "gpu_nvml_used_peak_bytes": 20 * GIB, "nvme_bytes_written": None,
        "eval_loss": 2.0,
    }  # fmt: skip
    out.update(overrides)
    return out


def write(runs_dir, run, summ: dict | None, steps: list[dict]) -> None:
    (runs_dir / run).mkdir(parents=True)
    if summ is not None:
        (runs_dir / run / "summary.json").write_text(json.dumps(summ))
    if steps:
        (runs_dir / run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in steps))


def memory_model(run: str, gpu: dict, host: dict, measured: dict) -> dict:
    zero = dict.fromkeys(figures.COMPONENTS, 0)
    predicted = {w: {**zero, **parts} for w, parts in (("gpu", gpu), ("host", host), ("nvme", {}))}
    for parts in predicted.values():
        parts["total"] = sum(parts.values())
    return {"run": run, "device": "cuda", "predicted": predicted, "measured": measured, "ratio": {}}


@pytest.fixture
def results(tmp_path):
    runs_dir, memory_dir = tmp_path / "runs", tmp_path / "memory"
    write(runs_dir, "full", summary("full", method="full", tokens_per_s=1500.0), metrics(10))
    write(runs_dir, "lora", summary("lora", tokens_per_s=3000.0, gpu_nvml_used_peak_bytes=None), metrics(10, 2.8))
    write(runs_dir, "qlora_offload", summary("qlora_offload", status="failed", error="boom", tokens_per_s=None,
                                             eval_loss=None, steps=None), metrics(4))  # fmt: skip
    oom = {k: None for k in ("tokens_per_s", "eval_loss", "steps", "host_rss_peak_bytes")}
    write(runs_dir, "zero3", summary("zero3", status="oom", gpu_nvml_used_peak_bytes=80 * GIB, **oom), [])
    cpu = dict.fromkeys(("gpu_allocated_peak_bytes", "gpu_reserved_peak_bytes", "gpu_nvml_used_peak_bytes"))
    write(
        runs_dir, "cpu_run", summary("cpu_run", device="cpu", nvme_bytes_written=3 * GIB, **cpu), metrics(10, gpu=False)
    )
    memory_dir.mkdir()
    gpu = {"weights": 2 * GIB, "gradients": 2 * GIB, "optimizer": 8 * GIB, "activations": 5 * GIB, "runtime": GIB}
    full = memory_model("full", gpu, {"weights": 2 * GIB}, {"gpu": 21 * GIB, "host": 4 * GIB, "nvme": None})
    (memory_dir / "full.json").write_text(json.dumps(full))
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"eval_loss": 3.5, "device": "cuda"}))
    return runs_dir, memory_dir, base


def entries(results, memory=True):
    runs_dir, memory_dir, _ = results
    return figures.load_runs(runs_dir, RUNS, memory_dir if memory else None)


def texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def bars(ax, gid: str) -> list:
    return [p for p in ax.patches if p.get_gid() == gid]


def test_make_figures_writes_valid_png_and_pdf(results, tmp_path):
    runs_dir, memory_dir, base = results
    out = tmp_path / "figures"
    paths = figures.make_figures(runs_dir, RUNS, base, out, memory_dir=memory_dir)
    names = {"loss_curves", "memory", "throughput"}
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in names for ext in ("png", "pdf"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths), "temporary files left behind"
    for path in paths:
        head = path.read_bytes()[:8]
        assert head == (b"\x89PNG\r\n\x1a\n" if path.suffix == ".png" else b"%PDF-1.4"), path
    assert b"CreationDate" not in (out / "memory.pdf").read_bytes()
    assert b"%%EOF" in (out / "memory.pdf").read_bytes()[-10:]


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_png_sizes_match_column_widths(results, tmp_path):
    runs_dir, memory_dir, base = results
    out = tmp_path / "figures"
    figures.make_figures(runs_dir, RUNS, base, out, memory_dir=memory_dir)
    dpi = figures.DPI
    assert png_size(out / "throughput.png")[0] == round(figures.SINGLE * dpi)
    assert png_size(out / "loss_curves.png") == (round(7.0 * dpi), round((0.35 + 1.35 * 2) * dpi))
    assert png_size(out / "memory.png") == (round(7.0 * dpi), round((0.9 + 0.42 * len(RUNS)) * dpi))


def test_output_is_byte_stable(results, tmp_path):
    runs_dir, memory_dir, base = results
    first = figures.make_figures(runs_dir, RUNS, base, tmp_path / "a", memory_dir=memory_dir)
    second = figures.make_figures(runs_dir, RUNS, base, tmp_path / "b", memory_dir=memory_dir)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_loss_figure_draws_each_run_with_metrics(results):
    fig = figures.loss_figure(entries(results), base_loss=3.5)
    train = {ln.get_label(): ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "train"}
    assert sorted(train) == sorted(["full", "lora", "qlora_offload", "cpu_run"])
    assert list(train["lora"].get_ydata()) == pytest.approx([2.8 - 0.05 * i for i in range(1, 11)])
    assert len(train["qlora_offload"].get_xdata()) == 4
    base = [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == "eval-base"]
    assert len(base) == len(RUNS) and all(tuple(ln.get_data()) == ([0], [3.5]) for ln in base)
    final = [ln.get_data() for ax in fig.axes for ln in ax.lines if ln.get_gid() == "eval-final"]
    assert [(list(x), list(y)) for x, y in final] == [([10], [2.0])] * 3  # full, lora, cpu_run
    assert ([ax.get_title() for ax in fig.axes if ax.get_visible()]) == RUNS
    assert {"failed at step 4", "OOM", "missing (no summary)"} <= set(texts(fig))
    plt.close(fig)


def test_loss_figure_same_colour_as_bars(results):
    es = entries(results)
    loss, thr = figures.loss_figure(es, None), figures.throughput_figure(es)
    lora_line = next(ln for ax in loss.axes for ln in ax.lines if ln.get_label() == "lora")
    lora_bar = bars(thr.axes[0], "throughput")[1]
    assert to_rgba(lora_line.get_color()) == pytest.approx(lora_bar.get_facecolor())
    assert not [ln for ax in loss.axes for ln in ax.lines if ln.get_gid() == "eval-base"]
    plt.close("all")


def test_memory_bars_equal_measured_gib_without_model(results):
    fig = figures.memory_figure(entries(results, memory=False))
    gpu, host, nvme = fig.axes
    assert [p.get_width() for p in bars(gpu, "measured-gpu")] == pytest.approx([20, 19, 20, 80])  # lora: reserved
    assert [p.get_width() for p in bars(host, "measured-host")] == pytest.approx([4, 4, 4, 4])
    assert [p.get_width() for p in bars(nvme, "measured-nvme")] == pytest.approx([3])
    assert not [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("predicted")]
    gpu_text = [t.get_text() for t in gpu.texts]
    assert "no GPU measurement (CPU run)" in gpu_text and "0.00" not in gpu_text
    assert "missing (no summary)" in gpu_text and "80.00 (OOM)" in gpu_text
    assert [t.get_text() for t in gpu.get_yticklabels()] == RUNS
    plt.close(fig)


def test_memory_stacks_the_model_beside_the_measurement(results):
    fig = figures.memory_figure(entries(results))
    gpu, host, _ = fig.axes
    stack = [p for p in gpu.patches if (p.get_gid() or "").startswith("predicted-gpu")]
    assert [p.get_width() for p in stack] == pytest.approx([2, 2, 8, 5, 1])
    assert [p.get_x() for p in stack] == pytest.approx([0, 2, 4, 12, 17])
    measured = bars(gpu, "measured-gpu")
    assert measured[0].get_width() == pytest.approx(21)  # the memory file's measurement wins
    assert all(p.get_y() + p.get_height() <= measured[0].get_y() + 1e-9 for p in stack), "stack sits above"
    assert [p.get_width() for p in host.patches if p.get_gid() == "predicted-host-weights"] == pytest.approx([2])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:5] == [f"predicted: {c}" for c in figures.COMPONENTS]
    plt.close(fig)


def test_cpu_only_runs_say_so_instead_of_zeros(tmp_path):
    runs_dir = tmp_path / "runs"
    cpu = dict.fromkeys(("gpu_allocated_peak_bytes", "gpu_reserved_peak_bytes", "gpu_nvml_used_peak_bytes"))
    for run in ("a", "b"):
        write(runs_dir, run, summary(run, device="cpu", **cpu), metrics(3, gpu=False))
    fig = figures.memory_figure(figures.load_runs(runs_dir, ["a", "b"]))
    assert len(fig.axes) == 2, "no NVMe panel when nothing was written there"
    gpu, host = fig.axes
    assert not gpu.patches and "no GPU measurement\n(CPU run)" in [t.get_text() for t in gpu.texts]
    assert [p.get_width() for p in host.patches] == pytest.approx([4, 4])
    plt.close(fig)


def test_throughput_bars_and_gaps(results):
    fig = figures.throughput_figure(entries(results))
    ax = fig.axes[0]
    assert [p.get_width() for p in bars(ax, "throughput")] == pytest.approx([1500, 3000, 2000])
    assert {"failed", "OOM", "missing (no summary)"} <= set(texts(fig))
    assert "tokens/s" in ax.get_xlabel()
    plt.close(fig)


def test_cli(results, tmp_path):
    runs_dir, _, base = results
    out = tmp_path / "cli"
    args = ["--runs-dir", str(runs_dir), "--runs", *RUNS, "--base", str(base), "--out", str(out)]
    assert figures.main(args) == 0
    assert len(list(out.glob("*.png"))) == 3 and len(list(out.glob("*.pdf"))) == 3


def test_text_is_at_least_7pt(results):
    es = entries(results)
    for fig in (figures.loss_figure(es, 3.5), figures.memory_figure(es), figures.throughput_figure(es)):
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize")) if t.get_text()]
        assert sizes and min(sizes) >= 7 and not any(math.isnan(s) for s in sizes)
    plt.close("all")


def test_nvme_prediction_is_the_predicted_bytes_written_not_the_swap_size(results):
    runs_dir, memory_dir, base = results
    model = memory_model("cpu_run", {}, {"weights": GIB}, {"gpu": None, "host": 4 * GIB, "nvme": 3 * GIB})
    model["predicted"]["nvme"].update(optimizer=GIB // 10, total=GIB // 10)  # swap files: 0.1 GiB
    model["nvme_written"] = {"per_step": 3 * GIB // 40, "steps": 40, "total": 3 * GIB}
    (memory_dir / "cpu_run.json").write_text(json.dumps(model))
    fig = figures.memory_figure(entries(results))
    nvme = fig.axes[2]
    assert sum(p.get_width() for p in bars(nvme, "predicted-nvme-optimizer")) == pytest.approx(3)
    plt.close(fig)
