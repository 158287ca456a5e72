"""The paper's figures (PNG and PDF, byte-stable: no dates or versions), sized for 3.5 in or 7 in columns, text >= 7 pt:

    python -m offloadbench.figures --runs-dir results/runs --runs full lora ... --base results/eval/base.json \
        [--memory-dir results/memory] [--claims configs/claims.yaml] --out results/figures

loss_curves, memory and throughput (each figure's function says what it shows). Every run named gets its place in
every figure, in its own colour: one without a summary is drawn as "missing", a failure or an OOM is labelled so.
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
from matplotlib.text import Annotation  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from . import speed  # noqa: E402
from .claims_file import load_claims  # noqa: E402
from .io import atomic_path  # noqa: E402

GIB, DPI = 2**30, 300
SINGLE, DOUBLE = 3.5, 7.0  # column widths, inches
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "runtime")
COMPONENT_COLOURS = dict(zip(COMPONENTS, ("#4d4d4d", "#7f7f7f", "#a6a6a6", "#c8c8c8", "#e6e6e6"), strict=True))
COMPONENT_HATCHES = dict(zip(COMPONENTS, ("", "////", "", "....", ""), strict=True))
STACKED = COMPONENTS[:4]  # the runtime is the baseline the host bar starts from: never stacked
NVME_COLOURS = {"predicted": "#e7cb94", "measured": "#8c6d31"}  # sand and bronze: no run's, no component's
PART_STYLE = {c: {"fc": COMPONENT_COLOURS[c], "hatch": COMPONENT_HATCHES[c], "ec": "white", "lw": 0.3} for c in STACKED}
PART_STYLE["written"] = {"fc": NVME_COLOURS["predicted"], "hatch": "\\\\\\\\", "ec": "white", "lw": 0.3}  # NVMe
STYLE = {
    **dict.fromkeys(("font.size", "axes.titlesize", "axes.labelsize"), 8),
    **dict.fromkeys(("xtick.labelsize", "ytick.labelsize", "legend.fontsize", "legend.title_fontsize"), 7),
    **dict.fromkeys(("axes.spines.top", "axes.spines.right"), False),
    **{"axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.5, "axes.axisbelow": True, "hatch.linewidth": 0.5},
    **{"pdf.fonttype": 42, "axes.titleweight": "bold", "axes.titlepad": 3},
}
PNG_METADATA, PDF_METADATA = {"Software": None}, {"CreationDate": None, "Producer": None, "Creator": None}
NOTE = {"fontsize": 7, "style": "italic", "color": "#555555"}
ALERT = {"fontsize": 7, "fontweight": "bold", "color": "#b00000"}


def _read_json(path: Path, lines: bool = False):
    """A JSON file (None if absent), or with ``lines`` a JSON-lines file (empty if absent)."""
    if not path.is_file():
        return [] if lines else None
    text = path.read_text()
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()] if lines else json.loads(text)


def run_colours(runs: list[str]) -> dict[str, tuple]:
    """One colour per run, by position; no greys (components, notes); past nine, tab20's pale halves come last."""
    small, large = plt.get_cmap("tab10").colors, plt.get_cmap("tab20").colors
    dark, light = [c for i, c in enumerate(large[::2]) if i != 7], [c for i, c in enumerate(large[1::2]) if i != 7]
    palette = [c for i, c in enumerate(small) if i != 7] if len(runs) <= 9 else [*dark, *light]
    return {run: palette[i % len(palette)] for i, run in enumerate(runs)}


def load_runs(runs_dir: Path, runs: list[str], memory_dir: Path | None = None) -> list[dict]:
    """Per run: its summary (None if missing), logged steps, memory model (None if absent), colour, folder."""
    dirs, colours = {run: Path(runs_dir) / run for run in runs}, run_colours(runs)
    memory = {run: _read_json(Path(memory_dir) / f"{run}.json") if memory_dir else None for run in runs}
    return [
        {"run": run, "summary": _read_json(d / "summary.json"), "metrics": _read_json(d / "metrics.jsonl", lines=True),
         "memory": memory[run], "colour": colours[run], "dir": d}
        for run, d in dirs.items()
    ]  # fmt: skip


def status_note(entry: dict) -> str | None:
    """What a reader must know about a run that did not finish; None for a run that did."""
    if entry["summary"] is None:
        return "missing (no summary)"
    return {"ok": None, "oom": "OOM"}.get(entry["summary"]["status"], "failed")


def _gib(value: int | float | None) -> float | None:
    return None if value is None else value / GIB


def short(x: float) -> str:
    """Two significant digits, exponent unpadded (1.9e-6, 0.64, 12): the one format for differences."""
    mantissa, _, exponent = f"{x:.2g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else mantissa


def rate_text(x: float) -> str:
    return f"{x:,.0f}"  # tokens/s; GiB are written f"{x:.2f}"


def model_size(entry: dict) -> str | None:
    """The run's model size label (``base`` or a label of model.sizes); None without a summary."""
    return None if entry["summary"] is None else (entry["summary"].get("spec") or {}).get("model_size") or "base"


def _size_order(entries: list[dict]) -> list[str]:
    """Model sizes in the order the runs name them, the base model first."""
    return sorted((s for s in dict.fromkeys(map(model_size, entries)) if s), key=lambda s: s != "base")


BASE_MARKER = {"ls": "none", "marker": "D", "ms": 4, "mfc": "white", "mec": "black", "mew": 0.8}
FINAL_MARKER = {"ls": "none", "marker": "o", "ms": 4.5, "mec": "black", "mew": 0.8}
LINESTYLES = ("-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 1.5, 1.5, 1.5)), (0, (3, 3)), (0, (1, 3)))  # twins overlap
# inches: a row of panels without its legends, a line of a legend; points from a panel's bottom to its legend
LOSS_ROW, LEGEND_LINE, LEGEND_DROP = 1.55, 0.125, 30


def loss_groups(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """Panels per (method, model size): "full" (base model), "full · mem"; a run without a summary alone, last."""
    groups: dict[tuple, list[dict]] = {}
    for e in entries:
        method = (e["summary"] or {}).get("method") or ((e["summary"] or {}).get("spec") or {}).get("method")
        groups.setdefault(("", e["run"]) if e["summary"] is None else (model_size(e), method), []).append(e)
    order = {s: i for i, s in enumerate(_size_order(entries))}
    keys = sorted(groups, key=lambda k: order.get(k[0], len(order)))  # stable: run order within a size
    return [(k[1] if k[0] in ("", "base") else f"{k[1]} · {k[0]}", groups[k]) for k in keys]


def largest_gap(group: list[dict]) -> tuple[float, str, str, int] | None:
    """(largest |train-loss difference| of two runs at a step both logged, run a, run b, step) or None."""
    curves = [(e["run"], {m["step"]: m["loss"] for m in e["metrics"]}) for e in group if e["metrics"]]
    pairs = [(a, b) for i, a in enumerate(curves) for b in curves[i + 1 :]]
    gaps = [(abs(la[s] - lb[s]), a, b, s) for (a, la), (b, lb) in pairs for s in sorted(la.keys() & lb.keys())]
    return max(gaps, key=lambda g: g[0], default=None)  # max keeps the first of equals


def _loss_run(ax, entry: dict, style) -> None:
    """One run's curve, labelled with its status if it did not finish ("zero3 (OOM)"), and its final eval loss."""
    steps, losses = [m["step"] for m in entry["metrics"]], [m["loss"] for m in entry["metrics"]]
    label, summary = entry["run"], entry["summary"] or {}
    if note := status_note(entry):
        label += f" ({note} at step {steps[-1]})" if steps else f" ({note})"
    ax.plot(steps, losses, color=entry["colour"], ls=style, lw=1.2, label=label, gid="train" if steps else "no-steps")
    if summary.get("eval_loss") is not None and (last := summary.get("steps") or (steps or [None])[-1]) is not None:
        final = {**FINAL_MARKER, "mfc": entry["colour"], "clip_on": False, "zorder": 3}
        ax.plot([last], [summary["eval_loss"]], **final, gid="eval-final")


def _loss_panel(ax, label: str, group: list[dict], base_loss: float | None) -> None:
    ax.set(title=label, xlabel="optimizer step")
    if group[0]["summary"] is None:
        ax.text(0.5, 0.5, status_note(group[0]), transform=ax.transAxes, ha="center", va="center", **ALERT)
        ax.set(xticks=[], yticks=[])
        return
    for i, entry in enumerate(group):
        _loss_run(ax, entry, LINESTYLES[i % len(LINESTYLES)])
    if base_loss is not None and all(model_size(e) == "base" for e in group):
        ax.plot([0], [base_loss], **BASE_MARKER, gid="eval-base", clip_on=False, zorder=3)
    gap = largest_gap(group)  # e.g. "largest gap 1.9e-6 at step 12\n(qlora vs qlora_offload)"
    where = gap and (": identical at every step" if gap[0] == 0 else f" at step {gap[3]}")
    title = gap and f"largest gap {short(gap[0])}{where}\n({gap[1]} vs {gap[2]})"
    # Below the panel (under the step axis's label), clear of the curves however flat they are.
    below = ax.transAxes + ScaledTranslation(0, -LEGEND_DROP / 72, ax.figure.dpi_scale_trans)
    legend = ax.legend(title=title, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below, frameon=False,
                       handlelength=2.2, labelspacing=0.25, borderaxespad=0, borderpad=0)  # fmt: skip
    legend.get_title().set_gid("largest-gap")
    for text, entry in zip(legend.get_texts(), group, strict=True):
        if status_note(entry):
            text.set(fontweight=ALERT["fontweight"], color=ALERT["color"], gid="status")


@plt.rc_context(STYLE)
def loss_figure(entries: list[dict], base_loss: float | None) -> Figure:
    """Loss per step overlaid per method and size (own axis each), eval loss before/after, the largest gap."""
    groups = loss_groups(entries)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    lines = [(2 if largest_gap(g) else 0) + len(g) for _, g in groups]  # the tallest legend sets a row's height
    height = 0.35 + LOSS_ROW * nrows + LEGEND_LINE * sum(max(lines[r * ncols : (r + 1) * ncols]) for r in range(nrows))
    fig, axes = plt.subplots(nrows, ncols, figsize=(DOUBLE, height), squeeze=False, layout="constrained")
    for ax, (label, group) in zip(axes.flat, groups, strict=False):
        _loss_panel(ax, label, group, base_loss)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (nats/token)")
    handles = [
        plt.Line2D([], [], color="#555555", lw=1.2, label="train loss (each step; run colour)"),
        plt.Line2D([], [], **BASE_MARKER, label="eval loss, base model (step 0)"),
        plt.Line2D([], [], **FINAL_MARKER, mfc="#555555", label="eval loss after fine-tuning (last step)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=3, frameon=False)
    return fig


TITLES = {"gpu": "GPU peak", "host": "host, above the runtime baseline", "nvme": "NVMe bytes written"}
MEMORY_ROW = {True: 0.36, False: 0.21}  # inches per run, with and without the predicted stack


def measured_gpu(summary: dict) -> float | None:
    """Peak GPU memory the device saw (NVML), else what PyTorch's allocator reserved, in GiB."""
    keys = ("gpu_nvml_used_peak_bytes", "gpu_reserved_peak_bytes", "gpu_allocated_peak_bytes")
    return next((_gib(summary[k]) for k in keys if summary.get(k) is not None), None)


def _measured(entry: dict, where: str) -> float | None:
    """In GiB, the memory file's first. Host: the peak less the runtime baseline (the memory file's runtime
    component: the measured baseline, summed over a node's ranks like its peak), else the summary's."""
    memory, summary = entry["memory"] or {}, entry["summary"] or {}
    peak = (memory.get("measured") or {}).get(where)
    runtime = ((memory.get("predicted") or {}).get("host") or {}).get("runtime")
    if where == "host":
        return _gib(peak - runtime if peak is not None and runtime else summary.get("host_rss_above_baseline_bytes"))
    if peak is not None:
        return _gib(peak)
    return measured_gpu(summary) if where == "gpu" else _gib(summary.get("nvme_bytes_written"))


def _predicted(entry: dict, where: str) -> dict | None:
    """The model's ``STACKED`` components in GiB or None; NVMe: predicted bytes written, not the swap size."""
    memory = entry["memory"] or {}
    if where == "nvme":
        return {"written": _gib(written)} if (written := (memory.get("nvme_written") or {}).get("total")) else None
    parts = (memory.get("predicted") or {}).get(where) or {}
    gib = {c: _gib(parts.get(c) or 0) for c in STACKED}
    return gib if sum(gib.values()) > 0 else None


def _row_text(ax, y: float, x: float, text: str, note: str | None = None, **kw) -> None:
    """A bar's value (with the run's status in red if it did not finish) just right of ``x``."""
    kw = {"fontsize": 7, "va": "center", **(ALERT if note else {}), **kw}
    ax.annotate(f"{text} ({note})" if note else text, (x, y), xytext=(3, 0), textcoords="offset points", **kw)


def _fit_row_texts(fig, axes, margin: float = 0.02) -> None:
    """Widen each panel's x range until the texts at the bars' ends (known in width once drawn) fit."""
    fig.canvas.draw()
    for ax in axes:
        lo, hi = ax.get_xlim()
        for t in ax.texts:
            if isinstance(t, Annotation) and t.xycoords == "data":
                share = t.get_window_extent().width / ax.get_window_extent().width
                hi = max(hi, lo + (t.xy[0] - lo) / max(1 - share - margin, 0.2))
        ax.set_xlim(lo, hi)


def _bar_style(entry: dict, colour=None) -> dict:
    """A run's bar in its colour; cross-hatched when the run did not finish (a peak up to the failure)."""
    hatch = "xxx" if status_note(entry) else None
    return {"color": entry["colour"] if colour is None else colour, "edgecolor": "black", "lw": 0.4, "hatch": hatch}


def _memory_row(ax, y: int, entry: dict, where: str, stacked: bool) -> None:
    """One run's bars on one panel: the predicted stack above the measured bar when ``stacked``."""
    h, left, note = 0.38 if stacked else 0.7, 0.0, status_note(entry)
    for comp, width in (_predicted(entry, where) or {}).items():
        ax.barh(y - h / 2, width, left=left, height=h, gid=f"predicted-{where}-{comp}", **PART_STYLE[comp])
        left += width
    if left:
        _row_text(ax, y - h / 2, left, f"{left:.2f}", color="#555555")
    y = y + h / 2 if stacked else y
    if (measured := _measured(entry, where)) is not None:
        colour = NVME_COLOURS["measured"] if where == "nvme" else None
        ax.barh(y, measured, height=h, gid=f"measured-{where}", **_bar_style(entry, colour))
        return _row_text(ax, y, measured, f"{measured:.2f}", note)
    gpu = "no GPU measurement (CPU run)" if (entry["summary"] or {}).get("device") == "cpu" else "not measured"
    text = note or {"gpu": gpu, "host": "no baseline measured"}.get(where, "–")
    _row_text(ax, y, 0, text, **(ALERT if note else NOTE))


@plt.rc_context(STYLE)
def memory_figure(entries: list[dict]) -> Figure:
    """GPU peak, host memory above the runtime baseline, NVMe bytes written, with the memory model's components
    stacked above; a row of panels per model size, each on its own scale (a run without a summary joins the first)."""
    sizes = _size_order(entries) or ["base"]
    rows = [(s, [e for e in entries if (model_size(e) or sizes[0]) == s]) for s in sizes]

    def shown(w, g):  # GPU and NVMe panels only where a run of the row measured or is predicted something there
        return w == "host" or any(_measured(e, w) is not None or _predicted(e, w) for e in g)

    rows = [(n, g, [w for w in TITLES if shown(w, g)]) for n, g in rows]
    stacked = any(e["memory"] for e in entries)
    size = (DOUBLE, 0.95 + MEMORY_ROW[stacked] * len(entries) + 0.55 * (len(rows) - 1))
    mosaic = [[f"{w}:{r}" for w in locs for _ in range(6 // len(locs))] for r, (_, _, locs) in enumerate(rows)]
    fig, axes = plt.subplot_mosaic(mosaic, figsize=size, height_ratios=[len(g) for _, g, _ in rows],
                                   layout="constrained")  # fmt: skip
    for r, (name, group, locs) in enumerate(rows):
        first = axes[f"{locs[0]}:{r}"]
        for where in locs:
            ax = axes[f"{where}:{r}"]
            ax.set(gid=f"memory-{where}-{name}", title=TITLES[where], xlabel="GiB")
            ax.grid(axis="y", visible=False)
            if ax is not first:
                ax.sharey(first)
                ax.tick_params(labelleft=False)
            for y, entry in enumerate(group):
                _memory_row(ax, y, entry, where, stacked)
            ax.set_xlim(0, max(ax.get_xlim()[1], 1e-3))
        first.set(yticks=range(len(group)), yticklabels=[e["run"] for e in group], ylim=(len(group) - 0.5, -0.5))
        if len(rows) > 1:
            params = next((e["summary"].get("params_total") for e in group if e["summary"]), None)
            label = "base model" if name == "base" else f"{name} size"
            first.set_ylabel(f"{label}\n({params / 1e6:.3g}M params)" if params else label)  # two lines: a short row
    fig.align_ylabels([axes[f"{locs[0]}:{r}"] for r, (_, _, locs) in enumerate(rows)])
    locations = [w for w in ("gpu", "host", "nvme") if any(w in locs for _, _, locs in rows)]
    parts = [(f"predicted: {c}", PART_STYLE[c]) for c in STACKED if stacked]
    parts.append(("measured (run colour)", {"fc": "white", "ec": "black", "lw": 0.4}))
    if "nvme" in locations:
        parts += [("predicted: NVMe written", PART_STYLE["written"])] if stacked else []
        parts.append(("measured: NVMe written", {"fc": NVME_COLOURS["measured"], "ec": "black", "lw": 0.4}))
    handles = [plt.Rectangle((0, 0), 1, 1, label=label, **style) for label, style in parts]
    if "gpu" not in locations:  # said once, instead of an empty panel
        cpu = ": CPU runs" if all(e["summary"]["device"] == "cpu" for e in entries if e["summary"]) else ""
        handles.append(plt.Line2D([], [], ls="none", label=f"no GPU measured{cpu}"))
    legend = fig.legend(handles=handles, loc="outside upper center", ncols=4, frameon=False)
    if "gpu" not in locations:
        legend.get_texts()[-1].set(**NOTE)
    _fit_row_texts(fig, fig.axes)
    return fig


def run_speed(entry: dict) -> dict:
    """speed.spread of the run's steady steps, else summary.json's tokens_per_s with no spread (n None)."""
    if rates := speed.steady_rates(entry["dir"]) if entry.get("dir") else []:
        return speed.spread(rates)
    return {"median": (entry["summary"] or {}).get("tokens_per_s"), "q1": None, "q3": None, "n": None}


def speed_pairs(claims: list[dict] | None, runs: list[str]) -> list[tuple[str, str, str]]:
    """(claim id, run, against) for every at_most claim on tokens_per_s whose two runs are drawn."""
    speed_claims = [c for c in claims or [] if c.get("check") == "at_most" and "tokens_per_s" in c.get("metrics", [])]
    return [(c["id"], c["run"], a) for c in speed_claims for a in c["against"] if {c["run"], a} <= set(runs)]


def _claim_brackets(ax, pairs: list[tuple[str, str, str]], rows: dict[str, int], medians: dict) -> None:
    """A bracket joining each claim's two runs, with its id and their medians' ratio (run / against)."""
    ends: list[int] = []  # the lowest row taken in each column of brackets
    trans = ax.get_yaxis_transform()
    for cid, run, against in pairs:
        top, bottom = sorted((rows[run], rows[against]))
        col = next((i for i, end in enumerate(ends) if end < top), len(ends))
        ends[col : col + 1] = [bottom]
        x = 1.02 + 0.2 * col
        ax.plot([x - 0.025, x, x, x - 0.025], [top, top, bottom, bottom], color="black", lw=0.7, transform=trans,
                clip_on=False, gid=f"claim-{cid}")  # fmt: skip
        ratio = f"\n{medians[run] / medians[against]:.2f}×" if medians.get(run) and medians.get(against) else ""
        ax.text(x + 0.015, (top + bottom) / 2, cid + ratio, transform=trans, ha="left", va="center", fontsize=7,
                linespacing=1.1, gid=f"claim-label-{cid}")  # fmt: skip


@plt.rc_context(STYLE)
def throughput_figure(entries: list[dict], claims: list[dict] | None = None) -> Figure:
    """Median tokens/s of steady steps, IQR and n; a panel (own scale) per model size; speed claims bracketed."""
    sizes = _size_order(entries) or ["base"]
    rows = [[e for e in entries if (model_size(e) or sizes[-1]) == size] for size in sizes]
    fig, axes = plt.subplots(len(rows), 1, figsize=(SINGLE, 0.6 + 0.3 * len(rows) + 0.21 * len(entries)),
                             height_ratios=[len(r) for r in rows], squeeze=False, layout="constrained")  # fmt: skip
    for ax, row in zip(axes[:, 0], rows, strict=True):
        speeds = [run_speed(e) for e in row]
        for y, (entry, sp) in enumerate(zip(row, speeds, strict=True)):
            note = status_note(entry)
            if sp["median"] is None:
                _row_text(ax, y, 0, note or "not measured", **(ALERT if note else NOTE))
                continue
            ax.barh(y, sp["median"], height=0.7, gid="throughput", **_bar_style(entry))
            if sp["q1"] is not None:
                err = [[sp["median"] - sp["q1"]], [sp["q3"] - sp["median"]]]
                bars = ax.errorbar(sp["median"], y, xerr=err, fmt="none", ecolor="black", elinewidth=0.7,
                                   capsize=1.8, capthick=0.7)  # fmt: skip
                bars.lines[2][0].set_gid("iqr")
            _row_text(ax, y, sp["q3"] or sp["median"], f"{rate_text(sp['median'])}  n={sp['n']}" if sp["n"]
                      else f"{rate_text(sp['median'])}  run mean", note)  # fmt: skip
        ax.set(yticks=range(len(row)), yticklabels=[e["run"] for e in row], ylim=(len(row) - 0.5, -0.5))
        ax.set_xlim(0, max((sp["q3"] or sp["median"] for sp in speeds if sp["median"] is not None), default=1.0) * 1.3)
        ax.xaxis.set(major_formatter=FuncFormatter(lambda x, _: rate_text(x)), major_locator=MaxNLocator(4))
        ax.grid(axis="y", visible=False)
        runs, medians = [e["run"] for e in row], {e["run"]: sp["median"] for e, sp in zip(row, speeds, strict=True)}
        _claim_brackets(ax, speed_pairs(claims, runs), {run: i for i, run in enumerate(runs)}, medians)
    axes[-1, 0].set_xlabel("training throughput (tokens/s): median, IQR")
    _fit_row_texts(fig, list(axes[:, 0]))
    return fig


@plt.rc_context(STYLE)
def sweep_figure(entries: list[dict]) -> Figure:
    """Throughput and peak memory (GPU's, else host RSS) against model size, a line per template and block."""
    fig, (speed_ax, memory) = plt.subplots(1, 2, figsize=(DOUBLE, 2.6), layout="constrained")
    series: dict[str, list[dict]] = {}
    for e in entries:
        block = ((e["summary"] or {}).get("spec") or {}).get("block_size", "?")
        series.setdefault(f"{e['run'].split('.', 1)[0]}, block {block}", []).append(e)
    colours = run_colours(list(series))
    for label, points in series.items():
        done = sorted((e for e in points if not status_note(e)), key=lambda e: e["summary"]["params_total"])
        x = [e["summary"]["params_total"] / 1e6 for e in done]
        mem = [measured_gpu(e["summary"]) or _gib(e["summary"]["host_rss_peak_bytes"]) for e in done]
        style = {"color": colours[label], "marker": "o", "ms": 3.5, "lw": 1.2, "label": label}
        speed_ax.plot(x, [e["summary"]["tokens_per_s"] for e in done], gid=f"speed:{label}", **style)
        memory.plot(x, mem, gid=f"memory:{label}", **style)
        for e in points:
            if e not in done:  # a point that failed or is missing keeps a mark where it would be
                speed_ax.annotate(status_note(e) or "", (0.02, 0.02), xycoords="axes fraction", **ALERT)
    unit = "GPU memory" if any((e["summary"] or {}).get("device") == "cuda" for e in entries) else "host RSS"
    speed_ax.set(xlabel="model parameters (M)", ylabel="training throughput (tokens/s)", ylim=(0, None), xlim=(0, None))
    memory.set(xlabel="model parameters (M)", ylabel=f"peak {unit} (GiB)", ylim=(0, None), xlim=(0, None))
    speed_ax.legend(fontsize=7, frameon=False)
    return fig


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically, without dates or versions."""
    paths = []
    for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        with atomic_path(path := Path(out_dir) / f"{name}.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths


def make_figures(runs_dir, runs: list[str], base_json, out_dir, memory_dir=None, sweep_runs=None, claims=None):
    """Render every figure (sweep.* for ``sweep_runs``); ``claims``: configs/claims.yaml or its claims."""
    claims = load_claims(claims) if claims is not None and not isinstance(claims, list) else claims
    base_loss = (_read_json(Path(base_json)) or {}).get("eval_loss") if base_json else None
    entries = load_runs(Path(runs_dir), runs, Path(memory_dir) if memory_dir else None)
    with plt.rc_context(STYLE):
        paths = save(loss_figure(entries, base_loss), out_dir, "loss_curves")
        paths += save(memory_figure(entries), out_dir, "memory")
        paths += save(throughput_figure(entries, claims), out_dir, "throughput")
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
    parser.add_argument("--claims", type=Path, default=None, help="configs/claims.yaml: bracket the speed claims' runs")
    a = parser.parse_args(argv)
    for path in make_figures(a.runs_dir, a.runs, a.base, a.out, a.memory_dir, a.sweep_runs, a.claims):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
