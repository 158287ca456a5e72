"""What every figure shares: the style (sizes, colours, hatches), the runs as the figures read them
(summary, logged steps, memory model, colour), number formats, the texts at bars' ends and saving."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402

from ..io import atomic_path  # noqa: E402

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


def _repeat_of(run: str, summary: dict | None, runs: list[str]) -> str | None:
    """The run that ``run`` repeats with another seed (its spec.repeat_of; without a summary, the name
    <run>.s<k> says it), where that run is drawn too; else None: a configuration of its own."""
    of = ((summary or {}).get("spec") or {}).get("repeat_of")
    if of is None and summary is None and (name := re.fullmatch(r"(.+)\.s\d+", run)):
        of = name.group(1)
    return of if of in runs and of != run else None


def load_runs(runs_dir: Path, runs: list[str], memory_dir: Path | None = None) -> list[dict]:
    """Per run: its summary (None if missing), logged steps, memory model (None if absent), colour, folder, and
    the run it is a seed repeat of (None for a configuration); a repeat takes its run's colour."""
    dirs = {run: Path(runs_dir) / run for run in runs}
    summaries = {run: _read_json(d / "summary.json") for run, d in dirs.items()}
    repeats = {run: _repeat_of(run, summaries[run], runs) for run in runs}
    colours = run_colours([run for run in runs if not repeats[run]])
    memory = {run: _read_json(Path(memory_dir) / f"{run}.json") if memory_dir else None for run in runs}
    return [
        {"run": run, "summary": summaries[run], "metrics": _read_json(d / "metrics.jsonl", lines=True),
         "memory": memory[run], "colour": colours[repeats[run] or run], "dir": d, "repeat_of": repeats[run]}
        for run, d in dirs.items()
    ]  # fmt: skip


def configurations(entries: list[dict]) -> list[dict]:
    """The runs that are no seed repeat of another: one bar, one line each."""
    return [e for e in entries if not e.get("repeat_of")]


def seeds_of(entries: list[dict]) -> dict[str, list[dict]]:
    """Each repeated run's seeds, the run itself first: {run: [its entry, run.s2's, ...]}."""
    by_run, groups = {e["run"]: e for e in entries}, {}
    for e in entries:
        if of := e.get("repeat_of"):
            groups.setdefault(of, [by_run[of]]).append(e)
    return groups


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


def save(fig: Figure, out_dir: Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically, without dates or versions."""
    paths = []
    for fmt, metadata in (("png", PNG_METADATA), ("pdf", PDF_METADATA)):
        with atomic_path(path := Path(out_dir) / f"{name}.{fmt}") as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
        paths.append(path)
    plt.close(fig)
    return paths
