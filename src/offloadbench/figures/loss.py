"""The loss curves: train loss per step overlaid per method and model size, eval loss before and
after fine-tuning, and the largest gap between a panel's runs."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import ScaledTranslation  # noqa: E402

from .common import ALERT, DOUBLE, STYLE, _size_order, model_size, short, status_note  # noqa: E402

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
