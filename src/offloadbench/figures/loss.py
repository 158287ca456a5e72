"""The loss curves: train loss per step overlaid per method and model size, eval loss before and
after fine-tuning, and the largest gap between a panel's runs."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from .common import (  # noqa: E402
    ALERT,
    DOUBLE,
    STYLE,
    _size_order,
    configurations,
    model_size,
    seeds_of,
    short,
    status_note,
)

BASE_MARKER = {"ls": "none", "marker": "D", "ms": 4, "mfc": "white", "mec": "black", "mew": 0.8}
FINAL_MARKER = {"ls": "none", "marker": "o", "ms": 4.5, "mec": "black", "mew": 0.8}
SEED_MARKER = {"ls": "none", "marker": "o", "ms": 2.6, "mec": "black", "mew": 0.5}  # a further seed's eval loss
BAND_ALPHA = 0.22
LINESTYLES = ("-", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 1.5, 1.5, 1.5)), (0, (3, 3)), (0, (1, 3)))  # twins overlap
# inches: a row of panels without its legends, a line of a legend; points from a panel's bottom to its legend
LOSS_ROW, LEGEND_LINE, LEGEND_DROP = 1.55, 0.125, 30


def loss_groups(entries: list[dict]) -> list[tuple[str, list[dict]]]:
    """Panels per (method, model size): "full" (base model), "full · mem"; a run without a summary alone, last.
    A seed repeat is no run of its panel: its run's band shows it."""
    groups: dict[tuple, list[dict]] = {}
    for e in configurations(entries):
        method = (e["summary"] or {}).get("method") or ((e["summary"] or {}).get("spec") or {}).get("method")
        groups.setdefault(("", e["run"]) if e["summary"] is None else (model_size(e), method), []).append(e)
    order = {s: i for i, s in enumerate(_size_order(entries))}
    keys = sorted(groups, key=lambda k: order.get(k[0], len(order)))  # stable: run order within a size
    return [(k[1] if k[0] in ("", "base") else f"{k[1]} · {k[0]}", groups[k]) for k in keys]


def largest_gap(group: list[dict]) -> tuple[float, str, str, int] | None:
    """(largest |train-loss difference| of two runs at a step both logged, run a, run b, step) or None; between
    mechanisms only: seed repeats are left out (a seed's difference is no mechanism's)."""
    curves = [(e["run"], {m["step"]: m["loss"] for m in e["metrics"]}) for e in configurations(group) if e["metrics"]]
    pairs = [(a, b) for i, a in enumerate(curves) for b in curves[i + 1 :]]
    gaps = [(abs(la[s] - lb[s]), a, b, s) for (a, la), (b, lb) in pairs for s in sorted(la.keys() & lb.keys())]
    return max(gaps, key=lambda g: g[0], default=None)  # max keeps the first of equals


def _eval_step(entry: dict) -> int | None:
    """The step a run's final eval loss is drawn at (its last); None without an eval loss."""
    summary, steps = entry["summary"] or {}, [m["step"] for m in entry["metrics"]]
    return (summary.get("steps") or (steps or [None])[-1]) if summary.get("eval_loss") is not None else None


def _loss_run(ax, entry: dict, style):
    """One run's curve, labelled with its status if it did not finish ("zero3 (OOM)"), and its final eval loss."""
    steps, losses = [m["step"] for m in entry["metrics"]], [m["loss"] for m in entry["metrics"]]
    label, summary = entry["run"], entry["summary"] or {}
    if note := status_note(entry):
        label += f" ({note} at step {steps[-1]})" if steps else f" ({note})"
    (line,) = ax.plot(steps, losses, color=entry["colour"], ls=style, lw=1.2, label=label,
                      gid="train" if steps else "no-steps")  # fmt: skip
    if (last := _eval_step(entry)) is not None:
        final = {**FINAL_MARKER, "mfc": entry["colour"], "clip_on": False, "zorder": 3}
        ax.plot([last], [summary["eval_loss"]], **final, gid="eval-final")
    return line


def _seed_band(ax, seeds: list[dict], k: int) -> tuple:
    """A repeated run's seeds (itself first): the min–max of their train loss at each step all of them logged, a
    band in the run's colour, and each seed's final eval loss, a column of dots joined by their range just right of
    the last step (the ``k``-th repeated run of the panel: further right); the legend's (handle, label, alert)."""
    run, colour = seeds[0]["run"], seeds[0]["colour"]
    done = [s for s in seeds if not status_note(s) and s["metrics"]]  # a failed seed's curve stops early
    curves = [{m["step"]: m["loss"] for m in s["metrics"]} for s in done]
    steps = sorted(set.intersection(*map(set, curves))) if len(curves) > 1 else []
    if steps:
        low, high = ([f(c[s] for c in curves) for s in steps] for f in (min, max))
        ax.fill_between(steps, low, high, color=colour, alpha=BAND_ALPHA, lw=0, gid="seed-band", zorder=1)
    beside = ax.transData + ScaledTranslation((6 + 4 * k) / 72, 0, ax.figure.dpi_scale_trans)
    evals = [(last, s["summary"]["eval_loss"]) for s in seeds if (last := _eval_step(s)) is not None]
    if evals:
        x, y = max(x for x, _ in evals), [y for _, y in evals]
        style = {"color": colour, "transform": beside, "clip_on": False, "zorder": 3}
        ax.plot([x, x], [min(y), max(y)], lw=0.8, gid="eval-seed-range", **style)
        ax.plot([x] * len(y), y, **SEED_MARKER, mfc=colour, gid="eval-seed", **style)
    left = [f"{s['run']} {status_note(s)}" for s in seeds if status_note(s)]
    count = f"{len(done)} of {len(seeds)}" if left else f"{len(seeds)}"
    label = f"{run}: {count} seeds (band: min–max{'; ' + ', '.join(left) if left else ''})"
    return plt.Rectangle((0, 0), 1, 1, fc=colour, alpha=BAND_ALPHA, lw=0), label, bool(left)


def _loss_panel(ax, label: str, group: list[dict], base_loss: float | None, seeds: dict[str, list[dict]]) -> None:
    ax.set(title=label, xlabel="optimizer step")
    if group[0]["summary"] is None:
        ax.text(0.5, 0.5, status_note(group[0]), transform=ax.transAxes, ha="center", va="center", **ALERT)
        ax.set(xticks=[], yticks=[])
        return
    legend_rows, done = [], []  # (handle, label, alert); the repeated runs drawn
    for i, entry in enumerate(group):
        line = _loss_run(ax, entry, LINESTYLES[i % len(LINESTYLES)])
        legend_rows.append((line, line.get_label(), bool(status_note(entry))))
        if entry["run"] in seeds:
            legend_rows.append(_seed_band(ax, seeds[entry["run"]], len(done)))
            done.append(entry["run"])
    if base_loss is not None and all(model_size(e) == "base" for e in group):
        ax.plot([0], [base_loss], **BASE_MARKER, gid="eval-base", clip_on=False, zorder=3)
    gap = largest_gap(group)  # e.g. "largest gap 1.9e-6 at step 12\n(qlora vs qlora_offload)"
    where = gap and (": identical at every step" if gap[0] == 0 else f" at step {gap[3]}")
    title = gap and f"largest gap {short(gap[0])}{where}\n({gap[1]} vs {gap[2]})"
    # Below the panel (under the step axis's label), clear of the curves however flat they are.
    below = ax.transAxes + ScaledTranslation(0, -LEGEND_DROP / 72, ax.figure.dpi_scale_trans)
    handles, labels, alerts = zip(*legend_rows, strict=True)
    legend = ax.legend(handles, labels, title=title, loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below,
                       frameon=False, handlelength=2.2, labelspacing=0.25, borderaxespad=0, borderpad=0)  # fmt: skip
    legend.get_title().set_gid("largest-gap")
    for text, alert in zip(legend.get_texts(), alerts, strict=True):
        if alert:
            text.set(fontweight=ALERT["fontweight"], color=ALERT["color"], gid="status")


@plt.rc_context(STYLE)
def loss_figure(entries: list[dict], base_loss: float | None) -> Figure:
    """Loss per step overlaid per method and size (own axis each), eval loss before/after, the largest gap."""
    groups, seeds = loss_groups(entries), seeds_of(entries)
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    lines = [
        (2 if largest_gap(g) else 0) + len(g) + sum(e["run"] in seeds for e in g) for _, g in groups
    ]  # the tallest legend sets a row's height
    height = (
        0.35
        + LEGEND_LINE * bool(seeds)
        + LOSS_ROW * nrows
        + LEGEND_LINE * sum(max(lines[r * ncols : (r + 1) * ncols]) for r in range(nrows))
    )
    fig, axes = plt.subplots(nrows, ncols, figsize=(DOUBLE, height), squeeze=False, layout="constrained")
    for ax, (label, group) in zip(axes.flat, groups, strict=False):
        _loss_panel(ax, label, group, base_loss, seeds)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("loss (nats/token)")
    handles = [
        plt.Line2D([], [], color="#555555", lw=1.2, label="train loss (each step; run colour)"),
        plt.Line2D([], [], **BASE_MARKER, label="eval loss, base model (step 0)"),
        plt.Line2D([], [], **FINAL_MARKER, mfc="#555555", label="eval loss after fine-tuning (last step)"),
    ]
    if seeds:
        handles.append(plt.Line2D([], [], **SEED_MARKER, mfc="#555555", label="each seed's eval loss (beside)"))
    fig.legend(handles=handles, loc="outside upper center", ncols=2 if seeds else 3, frameon=False)
    return fig
