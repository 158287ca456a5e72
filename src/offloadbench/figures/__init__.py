"""The paper's figures (PNG and PDF, byte-stable: no dates or versions), sized for 3.5 in or 7 in columns, text >= 7 pt:

    python -m offloadbench.figures --runs-dir results/runs --runs full lora ... --base results/eval/base.json \
        [--memory-dir results/memory] [--claims configs/claims.yaml] --out results/figures

loss_curves, memory and throughput (loss.py, memory.py, throughput.py; sweep.py for the sweep; common.py: the style,
the runs as read, the shared helpers; each figure's function says what it shows). Every run named gets its place in
every figure, in its own colour: one without a summary is drawn as "missing", a failure or an OOM is labelled so.
A run's seed repeats (<run>.s<k>, spec.repeat_of) are no runs of their own: they take its colour, the loss panels
draw their spread as a band around its line (and each seed's eval loss), the bars leave them out (one per
configuration) and the throughput figure marks each seed's median on its run's bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..claims_file import load_claims
from .common import (
    ALERT,
    COMPONENT_COLOURS,
    COMPONENTS,
    DOUBLE,
    DPI,
    GIB,
    NOTE,
    NVME_COLOURS,
    SINGLE,
    STYLE,
    _read_json,
    load_runs,
    model_size,
    plt,
    rate_text,
    run_colours,
    save,
    short,
    status_note,
)
from .loss import largest_gap, loss_figure, loss_groups
from .memory import measured_gpu, memory_figure
from .sweep import sweep_figure
from .throughput import run_speed, speed_pairs, throughput_figure

__all__ = [
    "ALERT", "COMPONENT_COLOURS", "COMPONENTS", "DOUBLE", "DPI", "GIB", "NOTE", "NVME_COLOURS", "SINGLE", "STYLE",
    "largest_gap", "load_runs", "loss_figure", "loss_groups", "main", "make_figures", "measured_gpu", "memory_figure",
    "model_size", "rate_text", "run_colours", "run_speed", "save", "short", "speed_pairs", "status_note",
    "sweep_figure", "throughput_figure",
]  # fmt: skip


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
