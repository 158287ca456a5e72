"""The memory figure: GPU peak, host memory above the runtime baseline and NVMe bytes written, measured,
with the memory model's components stacked above."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .common import (  # noqa: E402
    ALERT,
    DOUBLE,
    NOTE,
    NVME_COLOURS,
    PART_STYLE,
    STACKED,
    STYLE,
    _bar_style,
    _fit_row_texts,
    _gib,
    _row_text,
    _size_order,
    configurations,
    model_size,
    status_note,
)

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
    stacked above; a row of panels per model size, each on its own scale (a run without a summary joins the first).
    A bar per configuration: seed repeats are left out (the seed changes no memory the figure could show)."""
    entries = configurations(entries)
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
