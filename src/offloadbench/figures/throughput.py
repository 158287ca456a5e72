"""The throughput figure: median tokens/s of steady steps with the IQR, a panel per model size, and the
speed claims' runs bracketed."""

from __future__ import annotations

from collections import Counter

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from .. import speed  # noqa: E402
from .common import (  # noqa: E402
    ALERT,
    NOTE,
    SINGLE,
    STYLE,
    _bar_style,
    _fit_row_texts,
    _row_text,
    _size_order,
    configurations,
    model_size,
    rate_text,
    seeds_of,
    status_note,
)

SEED_ROW = 0.2  # the seeds' medians sit below the IQR's whisker, on the bar


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


def thread_text(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


@plt.rc_context(STYLE)
def throughput_figure(entries: list[dict], claims: list[dict] | None = None) -> Figure:
    """Median tokens/s of steady steps, IQR and n; a panel (own scale) per model size; speed claims bracketed.
    A bar per configuration: a repeated run's bar is its own, with a dot at each of its seeds' medians."""
    seeds, entries = seeds_of(entries), configurations(entries)
    # Speed is per the threads a run had (training.cpu_threads): where the runs had different
    # counts, the bars of the less common ones say theirs and the axis the most common.
    threads = {e["run"]: (e["summary"] or {}).get("threads") for e in entries}
    counts = Counter(t for t in threads.values() if t is not None)
    usual = counts.most_common(1)[0][0] if len(counts) > 1 else None
    sizes = _size_order(entries) or ["base"]
    rows = [[e for e in entries if (model_size(e) or sizes[-1]) == size] for size in sizes]
    fig, axes = plt.subplots(len(rows), 1, figsize=(SINGLE, 0.6 + 0.3 * len(rows) + 0.21 * len(entries)),
                             height_ratios=[len(r) for r in rows], squeeze=False, layout="constrained")  # fmt: skip
    for ax, row in zip(axes[:, 0], rows, strict=True):
        speeds = [run_speed(e) for e in row]
        spreads = {e["run"]: [m for s in seeds.get(e["run"], []) if (m := run_speed(s)["median"]) is not None]
                   for e in row}  # fmt: skip
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
            text = f"{rate_text(sp['median'])}  n={sp['n']}" if sp["n"] else f"{rate_text(sp['median'])}  run mean"
            if dots := spreads[entry["run"]]:
                ax.plot(dots, [y + SEED_ROW] * len(dots), ls="none", marker="o", ms=2.6, mfc="white", mec="black",
                        mew=0.6, zorder=3, gid="seed-medians")  # fmt: skip
                text += f", {len(dots)} seeds"
            if usual is not None and threads[entry["run"]] not in (None, usual):
                text += f", {thread_text(threads[entry['run']])}"
            _row_text(ax, y, max([sp["q3"] or sp["median"], *dots]), text, note)
        ax.set(yticks=range(len(row)), yticklabels=[e["run"] for e in row], ylim=(len(row) - 0.5, -0.5))
        ends = [sp["q3"] or sp["median"] for sp in speeds if sp["median"] is not None] + sum(spreads.values(), [])
        ax.set_xlim(0, max(ends, default=1.0) * 1.3)
        ax.xaxis.set(major_formatter=FuncFormatter(lambda x, _: rate_text(x)), major_locator=MaxNLocator(4))
        ax.grid(axis="y", visible=False)
        runs, medians = [e["run"] for e in row], {e["run"]: sp["median"] for e, sp in zip(row, speeds, strict=True)}
        _claim_brackets(ax, speed_pairs(claims, runs), {run: i for i, run in enumerate(runs)}, medians)
    notes = [f"{thread_text(usual)} unless marked"] if usual is not None else []
    notes += ["dots: each seed's median"] if seeds else []
    axes[-1, 0].set_xlabel("\n".join(["training throughput (tokens/s): median, IQR", *(f"({n})" for n in notes)]))
    _fit_row_texts(fig, list(axes[:, 0]))
    return fig
