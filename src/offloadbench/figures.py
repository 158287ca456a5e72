"""The paper's figures: loss curves, peak memory and throughput per run (PNG and PDF).

    python -m offloadbench.figures --runs-dir results/runs --runs full lora ... \
        --base results/eval/base.json [--memory-dir results/memory] --out results/figures

Writes ``loss_curves``, ``memory`` and ``throughput`` as ``.png`` and ``.pdf``. Every run named
on the command line gets its place in every figure: a run without a summary is drawn as
"missing", one that failed or ran out of memory is labelled so. Sizes follow a paper's column
widths (3.5 in single, 7 in double) with text of at least 7 pt at print size; each run keeps its
colour across figures. Output is byte-stable across reruns (no dates or versions embedded).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from .io import atomic_path  # noqa: E402

GIB = 2**30
DPI = 300
SINGLE, DOUBLE = 3.5, 7.0  # column widths, inches
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "runtime")
COMPONENT_COLOURS = dict(zip(COMPONENTS, ("#4d4d4d", "#7f7f7f", "#a6a6a6", "#c8c8c8", "#e6e6e6"), strict=True))
COMPONENT_HATCHES = dict(zip(COMPONENTS, ("", "////", "", "....", ""), strict=True))
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.5,
    "axes.axisbelow": True,
    "hatch.linewidth": 0.5,
    "pdf.fonttype": 42,
}
PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Producer": None, "Creator": None}


# ---------------------------------------------------------------- loading


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_colours(runs: list[str]) -> dict[str, tuple]:
    """One colour per run, by position in the run list, so every figure agrees. Greys are left out:
    they belong to the memory model's components and to notes."""
    small, large = plt.get_cmap("tab10").colors, plt.get_cmap("tab20").colors
    palette = [c for i, c in enumerate(small) if i != 7] if len(runs) <= 9 else [*large[:14], *large[16:]]
    return {run: palette[i % len(palette)] for i, run in enumerate(runs)}


def load_runs(runs_dir: Path, runs: list[str], memory_dir: Path | None = None) -> list[dict]:
    """Per run: its summary (None if missing), logged steps, memory model (None if absent) and colour."""
    colours = run_colours(runs)
    return [
        {
            "run": run,
            "summary": _read_json(Path(runs_dir) / run / "summary.json"),
            "metrics": _read_jsonl(Path(runs_dir) / run / "metrics.jsonl"),
            "memory": _read_json(Path(memory_dir) / f"{run}.json") if memory_dir else None,
            "colour": colours[run],
        }
        for run in runs
    ]


def status_note(entry: dict) -> str | None:
    """What a reader must know about a run that did not finish; None for a run that did."""
    summary = entry["summary"]
    if summary is None:
        return "missing (no summary)"
    if summary["status"] == "oom":
        return "OOM"
    if summary["status"] != "ok":
        return "failed"
    return None


def _gib(value: int | float | None) -> float | None:
    return None if value is None else value / GIB


# ---------------------------------------------------------------- loss curves

BASE_MARKER = {"ls": "none", "marker": "D", "ms": 4, "mfc": "white", "mec": "black", "mew": 0.8}
FINAL_MARKER = {"ls": "none", "marker": "o", "ms": 4.5, "mec": "black", "mew": 0.8}
NOTE = {"fontsize": 7, "style": "italic", "color": "#555555"}
ALERT = {"fontsize": 7, "fontweight": "bold", "color": "#b00000"}


def _loss_panel(ax, entry: dict, base_loss: float | None) -> None:
    steps = [m["step"] for m in entry["metrics"]]
    losses = [m["loss"] for m in entry["metrics"]]
    if steps:
        ax.plot(steps, losses, color=entry["colour"], lw=1.0, label=entry["run"], gid="train")
    if base_loss is not None:
        ax.plot([0], [base_loss], **BASE_MARKER, gid="eval-base", clip_on=False, zorder=3)
    summary = entry["summary"] or {}
    last = summary.get("steps") or (steps[-1] if steps else None)
    if summary.get("eval_loss") is not None and last is not None:
        final = {**FINAL_MARKER, "mfc": entry["colour"], "clip_on": False, "zorder": 3}
        ax.plot([last], [summary["eval_loss"]], **final, gid="eval-final")
    ax.set_title(entry["run"], color=entry["colour"], fontweight="bold", pad=2)
    if note := status_note(entry):
        if steps and entry["summary"]:  # a partial curve: keep the note clear of it, top right
            ax.text(0.97, 0.95, f"{note} at step {steps[-1]}", transform=ax.transAxes, ha="right", va="top",
                    gid="status", **ALERT)  # fmt: skip
        else:
            ax.text(0.5, 0.5, note, transform=ax.transAxes, ha="center", va="center", gid="status", **ALERT)


def _loss_legend(fig) -> None:
    handles = [
        plt.Line2D([], [], color="#555555", lw=1.0, label="train loss (each step)"),
        plt.Line2D([], [], **BASE_MARKER, label="eval loss, base model (step 0)"),
        plt.Line2D([], [], **FINAL_MARKER, mfc="#555555", label="eval loss after fine-tuning (final step)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False)


@plt.rc_context(STYLE)
def loss_figure(entries: list[dict], base_loss: float | None) -> Figure:
    """One panel per run (shared axes): training loss per step, eval loss of the base model at step 0
    and of the fine-tuned model at its last step (training evaluates only at the end)."""
    ncols = min(3, len(entries))
    nrows = math.ceil(len(entries) / ncols)
    size = (DOUBLE, 0.35 + 1.35 * nrows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, sharex=True, sharey=True, squeeze=False, layout="constrained")
    for ax, entry in zip(axes.flat, entries, strict=False):
        _loss_panel(ax, entry, base_loss)
    for ax in axes.flat[len(entries) :]:
        ax.set_visible(False)
    for col in range(ncols):  # the lowest panel of each column carries the step axis
        ax = axes[(len(entries) - 1 - col) // ncols, col]
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (nats/token)")
    _loss_legend(fig)
    return fig


# ---------------------------------------------------------------- memory


def measured_gpu(summary: dict) -> float | None:
    """Peak GPU memory the device saw (NVML), else what PyTorch's allocator reserved, in GiB."""
    for key in ("gpu_nvml_used_peak_bytes", "gpu_reserved_peak_bytes", "gpu_allocated_peak_bytes"):
        if summary.get(key) is not None:
            return _gib(summary[key])
    return None


MEASURED = {
    "gpu": measured_gpu,
    "host": lambda s: _gib(s.get("host_rss_peak_bytes")),
    "nvme": lambda s: _gib(s.get("nvme_bytes_written")),
}
AXIS_LABEL = {"gpu": "GPU peak (GiB)", "host": "host RSS peak (GiB)", "nvme": "NVMe written (GiB)"}


def _measured(entry: dict, where: str) -> float | None:
    memory, summary = entry["memory"], entry["summary"]
    if memory and (memory.get("measured") or {}).get(where) is not None:
        return _gib(memory["measured"][where])
    return MEASURED[where](summary) if summary else None


def _predicted(entry: dict, where: str) -> dict | None:
    """The memory model's components for ``where`` in GiB; None without a model or with nothing there.
    NVMe is measured as bytes written over the run, so its prediction is the predicted bytes written
    (one bar, in the optimizer's grey: optimizer state is most of what is swapped), not the swap size."""
    memory = entry["memory"] or {}
    if where == "nvme":
        written = _gib((memory.get("nvme_written") or {}).get("total") or 0)
        return {**dict.fromkeys(COMPONENTS, 0.0), "optimizer": written} if written else None
    parts = (memory.get("predicted") or {}).get(where) or {}
    gib = {c: _gib(parts.get(c) or 0) for c in COMPONENTS}
    return gib if sum(gib.values()) > 0 else None


def _is_cpu(entry: dict) -> bool:
    return bool(entry["summary"]) and entry["summary"].get("device") == "cpu"


def _row_text(ax, y: float, x: float, text: str, **kw) -> None:
    kw = {"fontsize": 7, **kw}
    ax.annotate(text, (x, y), xytext=(3, 0), textcoords="offset points", va="center", **kw)


def _bar_style(entry: dict) -> dict:
    """A run's bar in its colour; cross-hatched when the run did not finish (a peak up to the failure)."""
    return {"color": entry["colour"], "edgecolor": "black", "lw": 0.4, "hatch": "xxx" if status_note(entry) else None}


def _value_text(ax, y: float, x: float, value: str, note: str | None) -> None:
    _row_text(ax, y, x, f"{value} ({note})" if note else value, **(ALERT if note else {}))


def _stack(ax, y: float, h: float, parts: dict, where: str) -> float:
    left = 0.0
    for comp in COMPONENTS:
        style = {"color": COMPONENT_COLOURS[comp], "hatch": COMPONENT_HATCHES[comp], "edgecolor": "white", "lw": 0.3}
        ax.barh(y, parts[comp], left=left, height=h, gid=f"predicted-{where}-{comp}", **style)
        left += parts[comp]
    _row_text(ax, y, left, f"{left:.2f}", color="#555555")
    return left


def _unmeasured_text(entry: dict, where: str) -> tuple[str, dict]:
    if note := status_note(entry):
        return note, ALERT
    if where == "gpu":
        return ("no GPU measurement (CPU run)" if _is_cpu(entry) else "not measured"), NOTE
    return "–", NOTE


def _memory_row(ax, y: int, entry: dict, where: str, stacked: bool) -> float:
    """One run's bars on one panel (predicted stack above the measured bar when ``stacked``);
    return the largest x drawn."""
    h = 0.38 if stacked else 0.7
    y_meas = y + h / 2 if stacked else y
    predicted, measured = _predicted(entry, where), _measured(entry, where)
    right = _stack(ax, y - h / 2, h, predicted, where) if predicted else 0.0
    note = status_note(entry)
    if measured is None:
        text, style = _unmeasured_text(entry, where)
        _row_text(ax, y_meas, 0, text, **style)
        return right
    ax.barh(y_meas, measured, height=h, gid=f"measured-{where}", **_bar_style(entry))
    _value_text(ax, y_meas, measured, f"{measured:.2f}", note)
    return max(right, measured)


def _gpu_never_measured(entries: list[dict]) -> bool:
    return all(_is_cpu(e) and _predicted(e, "gpu") is None for e in entries)


def _memory_panel(ax, entries: list[dict], where: str, stacked: bool) -> None:
    ax.set_xlabel(AXIS_LABEL[where])
    ax.grid(axis="y", visible=False)
    if where == "gpu" and _gpu_never_measured(entries):
        ax.text(0.5, 0.5, "no GPU measurement\n(CPU run)", transform=ax.transAxes, ha="center", va="center", **NOTE)
        ax.set_xticks([])
        return
    right = max(_memory_row(ax, y, e, where, stacked) for y, e in enumerate(entries))
    ax.set_xlim(0, (right or 1) * 1.3)


def _memory_legend(fig) -> None:
    style = {"ec": "white", "lw": 0.3}
    handles = [
        plt.Rectangle(
            (0, 0), 1, 1, fc=COMPONENT_COLOURS[c], hatch=COMPONENT_HATCHES[c], label=f"predicted: {c}", **style
        )
        for c in COMPONENTS
    ]
    handles.append(plt.Rectangle((0, 0), 1, 1, fc="white", ec="black", lw=0.4, label="measured peak (run colour)"))
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False)


@plt.rc_context(STYLE)
def memory_figure(entries: list[dict]) -> Figure:
    """Peak memory per run: GPU and host panels (NVMe when any run wrote to it). Where a memory model
    file exists, its predicted components are stacked just above the measured peak."""
    wheres = ["gpu", "host"]
    if any(_measured(e, "nvme") is not None or _predicted(e, "nvme") for e in entries):
        wheres.append("nvme")
    stacked = any(e["memory"] for e in entries)
    size = (DOUBLE, 0.9 + (0.42 if stacked else 0.21) * len(entries))
    ratios = [0.55 if w == "gpu" and _gpu_never_measured(entries) else 1.0 for w in wheres]
    fig, axes = plt.subplots(1, len(wheres), figsize=size, sharey=True, width_ratios=ratios, layout="constrained")
    for ax, where in zip(axes, wheres, strict=True):
        _memory_panel(ax, entries, where, stacked)
    axes[0].set_yticks(range(len(entries)), [e["run"] for e in entries])
    axes[0].set_ylim(len(entries) - 0.5, -0.5)
    fig.align_xlabels(axes)
    if stacked:
        _memory_legend(fig)
    return fig


# ---------------------------------------------------------------- throughput


@plt.rc_context(STYLE)
def throughput_figure(entries: list[dict]) -> Figure:
    """Training throughput (tokens/s) per run, single column."""
    fig, ax = plt.subplots(figsize=(SINGLE, 0.75 + 0.21 * len(entries)), layout="constrained")
    values = [(e["summary"] or {}).get("tokens_per_s") for e in entries]
    for y, (entry, value) in enumerate(zip(entries, values, strict=True)):
        note = status_note(entry)
        if value is None:
            _row_text(ax, y, 0, note or "not measured", **(ALERT if note else NOTE))
            continue
        ax.barh(y, value, height=0.7, gid="throughput", **_bar_style(entry))
        _value_text(ax, y, value, f"{value:,.0f}", note)
    ax.set_yticks(range(len(entries)), [e["run"] for e in entries])
    ax.set_ylim(len(entries) - 0.5, -0.5)
    ax.set_xlim(0, max((v for v in values if v is not None), default=1.0) * 1.25)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
    ax.set_xlabel("training throughput (tokens/s)")
    ax.grid(axis="y", visible=False)
    return fig


# ---------------------------------------------------------------- sweep


def _sweep_series(entries: list[dict]) -> dict[str, list[dict]]:
    """Sweep points grouped into lines: template run and block size (points ordered by parameters)."""
    series: dict[str, list[dict]] = {}
    for entry in entries:
        spec = (entry["summary"] or {}).get("spec") or {}
        template = entry["run"].split(".", 1)[0]
        series.setdefault(f"{template}, block {spec.get('block_size', '?')}", []).append(entry)
    return series


@plt.rc_context(STYLE)
def sweep_figure(entries: list[dict]) -> Figure:
    """Throughput and peak memory against model size, one line per template run and block size.
    Peak memory is the accelerator's (NVML, else reserved) on GPU runs, host RSS on CPU runs."""
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(DOUBLE, 2.6), layout="constrained")
    colours = run_colours(list(_sweep_series(entries)))
    for label, points in _sweep_series(entries).items():
        done = [e for e in points if e["summary"] and e["summary"]["status"] == "ok"]
        done.sort(key=lambda e: e["summary"]["params_total"])
        x = [e["summary"]["params_total"] / 1e6 for e in done]
        gpu = [measured_gpu(e["summary"]) for e in done]
        mem = [
            g if g is not None else _gib(e["summary"]["host_rss_peak_bytes"]) for g, e in zip(gpu, done, strict=True)
        ]
        style = {"color": colours[label], "marker": "o", "ms": 3.5, "lw": 1.2, "label": label}
        speed.plot(x, [e["summary"]["tokens_per_s"] for e in done], gid=f"speed:{label}", **style)
        memory.plot(x, mem, gid=f"memory:{label}", **style)
        for e in points:
            if e not in done:  # a point that failed or is missing keeps a mark where it would be
                speed.annotate(status_note(e) or "", (0.02, 0.02), xycoords="axes fraction", **ALERT)
    gpu_runs = any((e["summary"] or {}).get("device") == "cuda" for e in entries)
    speed.set_xlabel("model parameters (M)")
    speed.set_ylabel("training throughput (tokens/s)")
    memory.set_xlabel("model parameters (M)")
    memory.set_ylabel("peak GPU memory (GiB)" if gpu_runs else "peak host RSS (GiB)")
    for ax in (speed, memory):
        ax.set_ylim(bottom=0)
        ax.set_xlim(left=0)
    speed.legend(fontsize=7, frameon=False)
    return fig


# ---------------------------------------------------------------- output


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically, without dates or versions."""
    paths = []
    for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        path = Path(out_dir) / f"{name}.{fmt}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def make_figures(runs_dir, runs: list[str], base_json, out_dir, memory_dir=None, sweep_runs=None) -> list[Path]:
    """Render every figure for ``runs`` (and sweep.* for ``sweep_runs``); return the files written."""
    base = _read_json(Path(base_json)) if base_json else None
    base_loss = (base or {}).get("eval_loss")
    entries = load_runs(Path(runs_dir), runs, Path(memory_dir) if memory_dir else None)
    paths = []
    with plt.rc_context(STYLE):
        paths += save(loss_figure(entries, base_loss), out_dir, "loss_curves")
        paths += save(memory_figure(entries), out_dir, "memory")
        paths += save(throughput_figure(entries), out_dir, "throughput")
        if sweep_runs:
            paths += save(sweep_figure(load_runs(Path(runs_dir), sweep_runs)), out_dir, "sweep")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.figures", description=__doc__.split("\n")[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("results/runs"))
    parser.add_argument("--runs", nargs="+", required=True, help="every run of the profile, in figure order")
    parser.add_argument("--base", type=Path, required=True, help="results/eval/base.json")
    parser.add_argument("--memory-dir", type=Path, default=None, help="results/memory (memory model), optional")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG and PDF files")
    parser.add_argument("--sweep-runs", nargs="*", default=None, help="the sweep's runs: sweep.png plots them")
    args = parser.parse_args(argv)
    for path in make_figures(args.runs_dir, args.runs, args.base, args.out, args.memory_dir, args.sweep_runs):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
