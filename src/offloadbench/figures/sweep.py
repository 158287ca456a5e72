"""The sweep figure: throughput and peak memory against model size."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .common import ALERT, DOUBLE, STYLE, _gib, run_colours, status_note  # noqa: E402
from .memory import measured_gpu  # noqa: E402


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
