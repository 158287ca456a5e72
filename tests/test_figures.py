"""The paper's figures (src/offloadbench/figures/), on synthetic runs: a GPU run with a memory
model, one without, an OOM, a failure, a CPU run and a run that left nothing; and a run over 3 seeds."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.colors import to_rgba

from offloadbench import figures

GIB = 2**30
RUNS = ["full", "lora", "qlora_offload", "zero3", "cpu_run", "missing"]
REPO = Path(__file__).resolve().parents[1]


def rate(i: int) -> float:
    return 2000.0 + 100.0 * (i % 4)  # per-step tokens/s with a spread


def metrics(n: int, start: float = 3.0, gpu: bool = True) -> list[dict]:
    peak = 10 * GIB if gpu else None
    return [
        {"step": i, "loss": start - 0.05 * i, "learning_rate": 1e-4, "grad_norm": 1.0, "step_time_s": 0.5,
         "tokens": 1024 * i, "tokens_per_s": rate(i), "host_rss_peak_bytes": GIB, "gpu_allocated_peak_bytes": peak,
         "gpu_reserved_peak_bytes": peak, "gpu_nvml_used_peak_bytes": peak}
        for i in range(1, n + 1)
    ]  # fmt: skip


def summary(run: str, **overrides) -> dict:
    out = {
        "run": run, "method": "lora", "offload": "none", "status": "ok", "error": None, "device": "cuda",
        "steps": 10, "tokens_per_s": 2000.0, "host_rss_peak_bytes": 4 * GIB, "host_rss_baseline_bytes": GIB // 2,
        "host_rss_above_baseline_bytes": 4 * GIB - GIB // 2, "gpu_allocated_peak_bytes": 17 * GIB,
        "gpu_reserved_peak_bytes": 19 * GIB, "gpu_nvml_used_peak_bytes": 20 * GIB, "nvme_bytes_written": None,
        "eval_loss": 2.0, "spec": {"model_size": "base"},
    }  # fmt: skip
    out.update(overrides)
    return out


CPU = dict.fromkeys(("gpu_allocated_peak_bytes", "gpu_reserved_peak_bytes", "gpu_nvml_used_peak_bytes"))


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
    write(runs_dir, "qlora_offload", summary("qlora_offload", method="qlora", status="failed", error="boom",
                                             tokens_per_s=None, eval_loss=None, steps=None), metrics(4))  # fmt: skip
    oom = {k: None for k in ("tokens_per_s", "eval_loss", "steps", "host_rss_peak_bytes")}
    oom["host_rss_above_baseline_bytes"] = None
    write(runs_dir, "zero3", summary("zero3", method="full", status="oom", gpu_nvml_used_peak_bytes=80 * GIB, **oom),
          [])  # fmt: skip
    write(
        runs_dir, "cpu_run", summary("cpu_run", device="cpu", nvme_bytes_written=3 * GIB, **CPU), metrics(10, gpu=False)
    )
    memory_dir.mkdir()
    gpu = {"weights": 2 * GIB, "gradients": 2 * GIB, "optimizer": 8 * GIB, "activations": 5 * GIB}
    host = {"weights": 2 * GIB, "runtime": GIB // 2}  # runtime: the measured baseline, as memory.predict writes it
    full = memory_model("full", gpu, host, {"gpu": 21 * GIB, "host": 4 * GIB, "nvme": None})
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


def panel(fig, gid: str):
    (ax,) = [ax for ax in fig.axes if ax.get_gid() == gid]
    return ax


def lines(fig, gid: str) -> list:
    return [ln for ax in fig.axes for ln in ax.lines if ln.get_gid() == gid]


def gap_title(ax) -> str:
    return ax.get_legend().get_title().get_text()


# ---------------------------------------------------------------- output


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
    # panels full, lora, qlora | missing; the tallest legend of the first row: a gap (2 lines) and 2 runs
    assert png_size(out / "loss_curves.png") == (round(7.0 * dpi), round((0.35 + 1.55 * 2 + 0.125 * (4 + 1)) * dpi))
    assert png_size(out / "memory.png") == (round(7.0 * dpi), round((0.95 + 0.36 * len(RUNS)) * dpi))


def test_output_is_byte_stable(results, tmp_path):
    runs_dir, memory_dir, base = results
    claims = REPO / "configs" / "claims.yaml"
    first = figures.make_figures(runs_dir, RUNS, base, tmp_path / "a", memory_dir=memory_dir, claims=claims)
    second = figures.make_figures(runs_dir, RUNS, base, tmp_path / "b", memory_dir=memory_dir, claims=claims)
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_text_is_at_least_7pt(results):
    es = entries(results)
    claims = [{"id": "C2", "check": "at_most", "run": "lora", "against": ["full"], "metrics": ["tokens_per_s"]}]
    for fig in (figures.loss_figure(es, 3.5), figures.memory_figure(es), figures.throughput_figure(es, claims)):
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(lambda o: hasattr(o, "get_fontsize")) if t.get_text()]
        assert sizes and min(sizes) >= 7 and not any(math.isnan(s) for s in sizes)
    plt.close("all")


def test_cli(results, tmp_path):
    runs_dir, _, base = results
    out = tmp_path / "cli"
    args = ["--runs-dir", str(runs_dir), "--runs", *RUNS, "--base", str(base), "--out", str(out)]
    assert figures.main([*args, "--claims", str(REPO / "configs" / "claims.yaml")]) == 0
    assert len(list(out.glob("*.png"))) == 3 and len(list(out.glob("*.pdf"))) == 3


def test_one_number_format():
    assert [figures.short(x) for x in (1.9e-6, 0.6381, 12.0, 0.0)] == ["1.9e-6", "0.64", "12", "0"]
    assert figures.rate_text(4160.48) == "4,160"


# ---------------------------------------------------------------- loss curves


def test_loss_figure_draws_each_run_with_metrics(results):
    fig = figures.loss_figure(entries(results), base_loss=3.5)
    train = {ln.get_label().split(" ")[0]: ln for ln in lines(fig, "train")}
    assert sorted(train) == sorted(["full", "lora", "qlora_offload", "cpu_run"])
    assert list(train["lora"].get_ydata()) == pytest.approx([2.8 - 0.05 * i for i in range(1, 11)])
    assert len(train["qlora_offload"].get_xdata()) == 4
    base = lines(fig, "eval-base")  # one per base-model panel; the missing run's size is unknown
    assert len(base) == 3 and all(tuple(ln.get_data()) == ([0], [3.5]) for ln in base)
    final = [ln.get_data() for ln in lines(fig, "eval-final")]
    assert [(list(x), list(y)) for x, y in final] == [([10], [2.0])] * 3  # full, lora, cpu_run
    legends = {t.get_text(): t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()}
    assert {"qlora_offload (failed at step 4)", "zero3 (OOM)"} <= set(legends) and "missing (no summary)" in texts(fig)
    assert legends["zero3 (OOM)"].get_color() == figures.ALERT["color"] != legends["full"].get_color()
    plt.close(fig)


def test_loss_panels_per_method_overlay_their_runs(results):
    """Old: one panel per run. Now one per method, its runs overlaid with a legend of their own."""
    fig = figures.loss_figure(entries(results), base_loss=3.5)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in shown] == ["full", "lora", "qlora", "missing"]
    lora = shown[1]
    assert [ln.get_label() for ln in lora.lines if ln.get_gid() == "train"] == ["lora", "cpu_run"]
    assert [t.get_text() for t in lora.get_legend().get_texts()] == ["lora", "cpu_run"]
    styles = [ln.get_linestyle() for ln in lora.lines if ln.get_gid() == "train"]
    assert len(set(styles)) == 2, "overlaid runs are told apart by line style as well as colour"
    assert [t.get_text() for t in shown[0].get_legend().get_texts()] == ["full", "zero3 (OOM)"]  # it keeps its place
    plt.close(fig)


def test_loss_panels_do_not_share_the_loss_axis(tmp_path):
    """LoRA's small gain must not be flattened by full fine-tuning's large one."""
    runs_dir = tmp_path / "runs"
    write(runs_dir, "full", summary("full", method="full"), metrics(10, start=6.0))
    lora = [{**m, "loss": 3.0 - 0.001 * m["step"]} for m in metrics(10)]
    write(runs_dir, "lora", summary("lora", eval_loss=2.99), lora)
    fig = figures.loss_figure(figures.load_runs(runs_dir, ["full", "lora"]), base_loss=None)
    full_ax, lora_ax = fig.axes
    assert lora_ax.get_shared_y_axes().get_siblings(lora_ax) == [lora_ax]
    low, high = lora_ax.get_ylim()
    assert high - low < 0.05, "the lora panel spans lora's own losses"
    assert full_ax.get_ylim()[1] - full_ax.get_ylim()[0] > 0.4
    plt.close(fig)


def test_other_model_size_gets_its_own_panels_without_the_base_eval(tmp_path):
    runs_dir = tmp_path / "runs"
    write(runs_dir, "full", summary("full", method="full"), metrics(5))
    write(runs_dir, "zero3", summary("zero3", method="full", spec={"model_size": "mem"}), metrics(5, 8.3))
    write(runs_dir, "lora_mem", summary("lora_mem", spec={"model_size": "mem"}), metrics(5, 8.3))
    fig = figures.loss_figure(figures.load_runs(runs_dir, ["zero3", "full", "lora_mem"]), base_loss=3.5)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["full", "full · mem", "lora · mem"]
    base = [ax.get_title() for ax in fig.axes for ln in ax.lines if ln.get_gid() == "eval-base"]
    assert base == ["full"], "base.json is the base model's: no diamond on the memory-scale panels"
    plt.close(fig)


def test_largest_gap_between_runs_is_annotated_with_its_value(tmp_path):
    runs_dir = tmp_path / "runs"
    steps = metrics(10)
    twin = [{**m, "loss": m["loss"] + (1.9e-6 if m["step"] == 7 else 4e-7)} for m in steps]
    write(runs_dir, "qlora", summary("qlora", method="qlora"), steps)
    write(runs_dir, "qlora_offload", summary("qlora_offload", method="qlora"), twin)
    write(runs_dir, "qlora_paged", summary("qlora_paged", method="qlora"), steps[:5])  # agrees where it ran
    es = figures.load_runs(runs_dir, ["qlora", "qlora_offload", "qlora_paged"])
    assert figures.largest_gap(es) == (pytest.approx(1.9e-6, rel=1e-3), "qlora", "qlora_offload", 7)
    fig = figures.loss_figure(es, base_loss=None)
    assert gap_title(fig.axes[0]) == "largest gap 1.9e-6 at step 7\n(qlora vs qlora_offload)"
    plt.close(fig)
    es = figures.load_runs(runs_dir, ["qlora", "qlora_paged"])
    fig = figures.loss_figure(es, base_loss=None)
    assert gap_title(fig.axes[0]) == "largest gap 0: identical at every step\n(qlora vs qlora_paged)"
    plt.close(fig)


def test_loss_figure_same_colour_as_bars(results):
    es = entries(results)
    loss, thr = figures.loss_figure(es, None), figures.throughput_figure(es)
    lora_line = next(ln for ax in loss.axes for ln in ax.lines if ln.get_label() == "lora")
    lora_bar = bars(thr.axes[0], "throughput")[1]
    assert to_rgba(lora_line.get_color()) == pytest.approx(lora_bar.get_facecolor())
    assert not lines(loss, "eval-base")
    plt.close("all")


def test_run_colours_keep_neighbours_apart_past_nine_runs():
    colours = list(figures.run_colours([f"r{i}" for i in range(12)]).values())
    assert len(set(colours)) == 12
    assert colours[:9] == list(plt.get_cmap("tab20").colors[0:14:2] + plt.get_cmap("tab20").colors[16::2])


# ---------------------------------------------------------------- memory


def test_memory_bars_equal_measured_gib_without_model(results):
    fig = figures.memory_figure(entries(results, memory=False))
    gpu, host, nvme = (panel(fig, f"memory-{w}-base") for w in ("gpu", "host", "nvme"))
    assert [p.get_width() for p in bars(gpu, "measured-gpu")] == pytest.approx([20, 19, 20, 80])  # lora: reserved
    assert [p.get_width() for p in bars(host, "measured-host")] == pytest.approx([3.5, 3.5, 3.5, 3.5])
    assert [p.get_width() for p in bars(nvme, "measured-nvme")] == pytest.approx([3])
    assert not [p for ax in fig.axes for p in ax.patches if (p.get_gid() or "").startswith("predicted")]
    gpu_text = [t.get_text() for t in gpu.texts]
    assert "no GPU measurement (CPU run)" in gpu_text and "0.00" not in gpu_text
    assert "missing (no summary)" in gpu_text and "80.00 (OOM)" in gpu_text
    assert [t.get_text() for t in gpu.get_yticklabels()] == RUNS
    plt.close(fig)


def test_host_bar_is_memory_above_the_runtime_baseline(results):
    """Old: the host RSS peak, mostly the Python/torch runtime. Now what the run added to it."""
    fig = figures.memory_figure(entries(results))
    host = panel(fig, "memory-host-base")
    # full: the memory file's measured 4 GiB less its runtime component (0.5 GiB); others: the summary's
    assert [p.get_width() for p in bars(host, "measured-host")] == pytest.approx([3.5, 3.5, 3.5, 3.5])
    assert [p.get_width() for p in host.patches if p.get_gid() == "predicted-host-weights"] == pytest.approx([2])
    assert not [p for p in host.patches if p.get_gid() == "predicted-host-runtime"], "the runtime is the baseline"
    assert "above the runtime baseline" in host.get_title()
    plt.close(fig)


def test_memory_stacks_the_model_beside_the_measurement(results):
    fig = figures.memory_figure(entries(results))
    gpu = panel(fig, "memory-gpu-base")
    stack = [p for p in gpu.patches if (p.get_gid() or "").startswith("predicted-gpu")]
    assert [p.get_width() for p in stack] == pytest.approx([2, 2, 8, 5])
    assert [p.get_x() for p in stack] == pytest.approx([0, 2, 4, 12])
    measured = bars(gpu, "measured-gpu")
    assert measured[0].get_width() == pytest.approx(21)  # the memory file's measurement wins
    assert all(p.get_y() + p.get_height() <= measured[0].get_y() + 1e-9 for p in stack), "stack sits above"
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:4] == [f"predicted: {c}" for c in ("weights", "gradients", "optimizer", "activations")]
    assert "predicted: runtime" not in labels
    plt.close(fig)


def test_cpu_only_runs_get_no_empty_gpu_panel(tmp_path):
    runs_dir = tmp_path / "runs"
    for run in ("a", "b"):
        write(runs_dir, run, summary(run, device="cpu", **CPU), metrics(3, gpu=False))
    fig = figures.memory_figure(figures.load_runs(runs_dir, ["a", "b"]))
    assert [ax.get_gid() for ax in fig.axes] == ["memory-host-base"], "no GPU panel, no NVMe panel"
    assert [p.get_width() for p in fig.axes[0].patches] == pytest.approx([3.5, 3.5])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels.count("no GPU measured: CPU runs") == 1
    plt.close(fig)


def test_gpu_panel_kept_when_a_run_measured_one(results):
    fig = figures.memory_figure(entries(results))
    assert [ax.get_gid() for ax in fig.axes] == [f"memory-{w}-base" for w in ("gpu", "host", "nvme")]
    assert "no GPU measured: CPU runs" not in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


def test_nvme_prediction_is_the_predicted_bytes_written_not_the_swap_size(results):
    runs_dir, memory_dir, base = results
    model = memory_model("cpu_run", {}, {"weights": GIB}, {"gpu": None, "host": 4 * GIB, "nvme": 3 * GIB})
    model["predicted"]["nvme"].update(optimizer=GIB // 10, total=GIB // 10)  # swap files: 0.1 GiB
    model["nvme_written"] = {"per_step": 3 * GIB // 40, "steps": 40, "total": 3 * GIB}
    (memory_dir / "cpu_run.json").write_text(json.dumps(model))
    fig = figures.memory_figure(entries(results))
    nvme = panel(fig, "memory-nvme-base")
    assert sum(p.get_width() for p in bars(nvme, "predicted-nvme-written")) == pytest.approx(3)
    plt.close(fig)


def test_nvme_has_its_own_colour(results):
    """Old: the predicted NVMe bar had the optimizer's grey and the measured one a run's colour."""
    runs_dir, memory_dir, _ = results
    model = memory_model("cpu_run", {}, {"weights": GIB}, {"gpu": None, "host": 4 * GIB, "nvme": 3 * GIB})
    model["nvme_written"] = {"per_step": 3 * GIB // 40, "steps": 40, "total": 3 * GIB}
    (memory_dir / "cpu_run.json").write_text(json.dumps(model))
    es = entries(results)
    fig = figures.memory_figure(es)
    nvme = panel(fig, "memory-nvme-base")
    (predicted,), (measured,) = bars(nvme, "predicted-nvme-written"), bars(nvme, "measured-nvme")
    taken = {to_rgba(figures.COMPONENT_COLOURS[c]) for c in figures.COMPONENTS} | {to_rgba(e["colour"]) for e in es}
    assert predicted.get_facecolor() == pytest.approx(to_rgba(figures.NVME_COLOURS["predicted"]))
    assert measured.get_facecolor() == pytest.approx(to_rgba(figures.NVME_COLOURS["measured"]))
    assert predicted.get_facecolor() not in taken and measured.get_facecolor() not in taken
    plt.close(fig)


def test_memory_rows_per_model_size_without_empty_panels(tmp_path):
    runs_dir = tmp_path / "runs"
    mem = {"spec": {"model_size": "mem"}, "params_total": 103_000_000}
    write(runs_dir, "lora", summary("lora", device="cpu", params_total=1_840_000, **CPU), metrics(3, gpu=False))
    write(runs_dir, "zero3", summary("zero3", device="cpu", **mem, **CPU), metrics(3, gpu=False))
    nvme = summary("zero3_offload_nvme", device="cpu", nvme_bytes_written=5 * GIB, **mem, **CPU)
    write(runs_dir, "zero3_offload_nvme", nvme, metrics(3, gpu=False))
    fig = figures.memory_figure(figures.load_runs(runs_dir, ["lora", "zero3", "zero3_offload_nvme"]))
    assert [ax.get_gid() for ax in fig.axes] == ["memory-host-base", "memory-host-mem", "memory-nvme-mem"]
    assert fig.axes[0].get_ylabel() == "base model\n(1.84M params)"
    assert fig.axes[1].get_ylabel() == "mem size\n(103M params)"
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["zero3", "zero3_offload_nvme"]
    assert [p.get_width() for p in bars(fig.axes[2], "measured-nvme")] == pytest.approx([5])
    plt.close(fig)


# ---------------------------------------------------------------- throughput


def test_throughput_bar_is_the_median_of_steady_steps_with_the_iqr(results):
    fig = figures.throughput_figure(entries(results))
    ax = fig.axes[0]
    steady = [rate(i) for i in range(1, 11)][2:]  # speed.WARMUP_STEPS left out
    q1, _, q3 = statistics.quantiles(steady, n=4)
    widths = [p.get_width() for p in bars(ax, "throughput")]
    assert widths[:2] == pytest.approx([statistics.median(steady)] * 2)  # full, lora: the steps, not the summary
    iqr = [c for c in ax.collections if c.get_gid() == "iqr"]
    assert [[tuple(v) for v in c.get_segments()[0]] for c in iqr[:2]] == [[(q1, 0), (q3, 0)], [(q1, 1), (q3, 1)]]
    assert f"{figures.rate_text(statistics.median(steady))}  n=8" in texts(fig)
    assert {"OOM", "missing (no summary)"} <= set(texts(fig))
    assert "tokens/s" in ax.get_xlabel()
    plt.close(fig)


def test_throughput_without_steps_falls_back_to_the_summary(tmp_path):
    runs_dir = tmp_path / "runs"
    write(runs_dir, "a", summary("a", tokens_per_s=1234.0), [])
    fig = figures.throughput_figure(figures.load_runs(runs_dir, ["a"]))
    ax = fig.axes[0]
    assert [p.get_width() for p in bars(ax, "throughput")] == pytest.approx([1234])
    assert not [c for c in ax.collections if c.get_gid() == "iqr"]
    assert texts(fig) == ["1,234  run mean"]
    plt.close(fig)


@pytest.mark.parametrize(
    ("threads", "labels", "axis"),
    [
        ((1, 1, 2), ["1,234  run mean", "1,500  run mean", "2,000  run mean, 2 threads"], "(1 thread unless marked)"),
        ((2, 2, 2), ["1,234  run mean", "1,500  run mean", "2,000  run mean"], None),
    ],
)
def test_throughput_bars_name_their_threads_where_the_runs_had_different_counts(tmp_path, threads, labels, axis):
    """A one-core bar must not be read against a two-core one without saying so."""
    runs_dir = tmp_path / "runs"
    for run, rate, t in zip(("a", "b", "c"), (1234.0, 1500.0, 2000.0), threads, strict=True):
        write(runs_dir, run, summary(run, tokens_per_s=rate, threads=t), [])
    fig = figures.throughput_figure(figures.load_runs(runs_dir, ["a", "b", "c"]))
    assert texts(fig) == labels
    xlabel = fig.axes[-1].get_xlabel()
    assert (axis in xlabel) if axis else ("thread" not in xlabel)
    plt.close(fig)


def test_speed_claim_pairs_are_marked(results):
    claims = [
        {"id": "C1", "check": "at_most", "run": "lora", "against": ["full"], "metrics": ["gpu_allocated_peak_bytes"]},
        {"id": "C2", "check": "at_most", "run": "lora", "against": ["full"], "metrics": ["tokens_per_s"]},
        {"id": "C4", "check": "at_most", "run": "cpu_run", "against": ["nowhere"], "metrics": ["tokens_per_s"]},
    ]
    fig = figures.throughput_figure(entries(results), claims)
    ax = fig.axes[0]
    (bracket,) = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("claim-")]
    assert bracket.get_gid() == "claim-C2" and list(bracket.get_ydata()) == [0, 0, 1, 1]  # rows of full and lora
    assert [t.get_text() for t in ax.texts if t.get_gid() == "claim-label-C2"] == ["C2\n1.00×"]
    plt.close(fig)
    assert figures.speed_pairs(claims, ["full", "lora", "cpu_run"]) == [("C2", "lora", "full")]


def test_speed_pairs_of_the_claims_file():
    from offloadbench.claims_file import load_claims

    runs = ["full", "qlora_offload", "qlora_zero3", "zero3_offload_cpu", "zero3_offload_nvme"]
    pairs = figures.speed_pairs(load_claims(REPO / "configs" / "claims.yaml"), runs)
    assert {("C2", "qlora_offload", "qlora_zero3"), ("C4", "zero3_offload_nvme", "zero3_offload_cpu")} <= set(pairs)
    assert "C1" not in {cid for cid, _, _ in pairs}, "a memory claim is no speed pair"


def test_throughput_has_a_panel_per_model_size_with_its_own_scale(tmp_path):
    """A 103 M-parameter run's ~50 tokens/s is a bar of its own scale, not a sliver beside ~8,000."""
    runs_dir = tmp_path / "runs"
    write(runs_dir, "full", summary("full", tokens_per_s=8000.0, spec={"model_size": "base"}), metrics(10))
    write(runs_dir, "zero3", summary("zero3", tokens_per_s=50.0, spec={"model_size": "mem"}), [])
    fig = figures.throughput_figure(figures.load_runs(runs_dir, ["full", "zero3"]))
    base, mem = fig.axes
    assert [t.get_text() for t in mem.get_yticklabels()] == ["zero3"]
    assert bars(mem, "throughput")[0].get_width() == pytest.approx(50.0) and mem.get_xlim()[1] < 100
    assert base.get_xlim()[1] > 2000
    plt.close(fig)


# ---------------------------------------------------------------- seed repeats

SEEDED = ["full", "lora", "lora_offload", "lora.s2", "lora.s3"]


def seed_of(run: str) -> dict:
    return {"model_size": "base", "repeat_of": run}


@pytest.fixture
def seeded(tmp_path):
    """lora over 3 seeds (losses 0.05 apart, more than lora and lora_offload differ: 1e-3 at step 7)."""
    runs_dir = tmp_path / "runs"
    write(runs_dir, "full", summary("full", method="full", tokens_per_s=1500.0), metrics(10))
    write(runs_dir, "lora", summary("lora"), metrics(10, 2.8))
    offload = [{**m, "loss": m["loss"] + (1e-3 if m["step"] == 7 else 1e-4)} for m in metrics(10, 2.8)]
    write(runs_dir, "lora_offload", summary("lora_offload", eval_loss=2.001), offload)
    for run, shift, speedup, eval_loss in (("lora.s2", 0.05, 1.1, 2.05), ("lora.s3", -0.03, 0.9, 1.97)):
        steps = [
            {**m, "loss": m["loss"] + shift, "tokens_per_s": m["tokens_per_s"] * speedup} for m in metrics(10, 2.8)
        ]
        write(runs_dir, run, summary(run, eval_loss=eval_loss, spec=seed_of("lora")), steps)
    return runs_dir


def seeded_entries(runs_dir, runs=SEEDED):
    return figures.load_runs(runs_dir, runs)


def lora_panel(fig):
    (ax,) = [ax for ax in fig.axes if ax.get_visible() and ax.get_title() == "lora"]
    return ax


def test_a_repeated_run_is_one_line_with_a_band_of_its_seeds(seeded):
    """Old: lora.s2 and lora.s3 were two more lines, as if they were two more mechanisms."""
    fig = figures.loss_figure(seeded_entries(seeded), base_loss=3.5)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["full", "lora"]
    ax = lora_panel(fig)
    assert [ln.get_label() for ln in ax.lines if ln.get_gid() == "train"] == ["lora", "lora_offload"]
    (band,) = [c for c in ax.collections if c.get_gid() == "seed-band"]
    xy = band.get_paths()[0].vertices
    lora = [2.8 - 0.05 * i for i in range(1, 11)]
    for step, loss in zip(range(1, 11), lora, strict=True):
        at = sorted(y for x, y in xy if x == pytest.approx(step))
        assert at[0] == pytest.approx(loss - 0.03) and at[-1] == pytest.approx(loss + 0.05), step
    assert to_rgba(band.get_facecolor()[0], 1) == pytest.approx(to_rgba(lines(fig, "train")[1].get_color()))
    assert band.get_alpha() < 0.5
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lora", "lora: 3 seeds (band: min–max)",
                                                                     "lora_offload"]  # fmt: skip
    seeds = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.lines if ln.get_gid() == "eval-seed"]
    assert seeds == [([10] * 3, [2.0, 2.05, 1.97])], "each seed's eval loss is marked, in a column"
    (spread,) = [ln for ln in ax.lines if ln.get_gid() == "eval-seed-range"]
    assert list(spread.get_ydata()) == [1.97, 2.05]
    assert len([ln for ln in ax.lines if ln.get_gid() == "eval-final"]) == 2  # lora, lora_offload
    assert "each seed's eval loss (beside)" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)


def test_largest_gap_is_between_mechanisms_not_seeds(seeded):
    """The seeds differ by 0.05, lora and lora_offload by 1e-3: the gap named is the mechanisms'."""
    es = seeded_entries(seeded)
    assert figures.largest_gap(es[1:]) == (pytest.approx(1e-3, rel=1e-3), "lora", "lora_offload", 7)
    fig = figures.loss_figure(es, base_loss=None)
    assert gap_title(lora_panel(fig)) == "largest gap 0.001 at step 7\n(lora vs lora_offload)"
    plt.close(fig)


def test_a_repeat_takes_its_runs_colour_and_no_place_of_its_own(seeded):
    es = {e["run"]: e for e in seeded_entries(seeded)}
    assert es["lora.s2"]["colour"] == es["lora.s3"]["colour"] == es["lora"]["colour"]
    assert es["lora_offload"]["colour"] == figures.run_colours(["full", "lora", "lora_offload"])["lora_offload"]
    assert [es[r]["repeat_of"] for r in SEEDED] == [None, None, None, "lora", "lora"]
    alone = {e["run"]: e for e in seeded_entries(seeded, ["full", "lora.s2"])}  # its run not drawn: a run of its own
    assert alone["lora.s2"]["repeat_of"] is None and alone["lora.s2"]["colour"] != alone["full"]["colour"]


def test_a_seed_that_left_nothing_is_named_in_the_band(seeded):
    (seeded / "lora.s4").mkdir()  # no summary: its name says whose seed it is
    fig = figures.loss_figure(seeded_entries(seeded, [*SEEDED, "lora.s4"]), base_loss=None)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["full", "lora"], "no 'missing' panel"
    texts_ = {t.get_text(): t for t in lora_panel(fig).get_legend().get_texts()}
    label = "lora: 3 of 4 seeds (band: min–max; lora.s4 missing (no summary))"
    assert label in texts_ and texts_[label].get_color() == figures.ALERT["color"]
    plt.close(fig)


def test_memory_and_throughput_have_a_bar_per_configuration(seeded):
    """Old: a bar per seed, as if each were a configuration of its own."""
    es = seeded_entries(seeded)
    memory = figures.memory_figure(es)
    gpu = panel(memory, "memory-gpu-base")
    assert len(bars(gpu, "measured-gpu")) == 3
    assert [t.get_text() for t in gpu.get_yticklabels()] == ["full", "lora", "lora_offload"]
    fig = figures.throughput_figure(es)
    ax = fig.axes[0]
    assert len(bars(ax, "throughput")) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["full", "lora", "lora_offload"]
    (dots,) = lines(fig, "seed-medians")
    median = statistics.median([rate(i) for i in range(3, 11)])
    assert sorted(dots.get_xdata()) == pytest.approx([0.9 * median, median, 1.1 * median])
    assert list(dots.get_ydata()) == pytest.approx([1.2] * 3), "on lora's bar"
    assert f"{figures.rate_text(median)}  n=8, 3 seeds" in texts(fig)
    assert ax.get_xlim()[1] > 1.1 * median
    plt.close("all")


def test_seeded_figures_render(seeded, tmp_path):
    base = tmp_path / "base.json"
    base.write_text(json.dumps({"eval_loss": 3.5}))
    paths = figures.make_figures(seeded, SEEDED, base, tmp_path / "figures")
    assert len(paths) == 6
    plt.close("all")
