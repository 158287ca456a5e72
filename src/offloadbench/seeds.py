"""Seed repeats: each repeated run's central value, spread and n over its seeds.

A profile's ``repeats`` (config.expand_repeats) adds runs <run>.s<k> that differ from <run> only by
the seed: data order, dropout and LoRA's initial A change, the base model does not. This module
turns their rows of the comparison table into ``results/tables/seeds.*``: per repeated run and
metric, the median over the seeds, the lowest and highest value (the spread: with 3 seeds a range
says more than a standard deviation would) and n, the number of seeds that finished. Claims and
tables read this, never a single seed, where the profile repeated a run.
"""

from __future__ import annotations

import pandas as pd

# comparison-table column -> label in the seeds table
METRICS = {
    "eval loss": "eval loss",
    "eval ppl": "eval ppl",
    "eval gain": "eval gain",
    "train loss": "train loss",
    "tokens/s": "tokens/s",
}


def seeds_table(table: pd.DataFrame, groups: dict[str, list[str]]) -> pd.DataFrame:
    """One row per repeated run and metric: median, min, max, range and n over its seeds (runs that
    did not finish with status ok are left out of the numbers and counted in ``of``)."""
    rows = []
    by_run = table.set_index("run")
    for run, members in groups.items():
        present = [m for m in members if m in by_run.index]
        ok = [m for m in present if by_run.at[m, "status"] == "ok"]
        for column, label in METRICS.items():
            if column not in by_run:
                continue
            values = pd.to_numeric(by_run.loc[ok, column], errors="coerce").dropna()
            rows.append(
                {
                    "run": run,
                    "metric": label,
                    "median": values.median() if len(values) else None,
                    "min": values.min() if len(values) else None,
                    "max": values.max() if len(values) else None,
                    "range": values.max() - values.min() if len(values) else None,
                    "n": len(values),
                    "of": len(members),
                    "seeds": ", ".join(members),
                }
            )
    return pd.DataFrame(rows, columns=["run", "metric", "median", "min", "max", "range", "n", "of", "seeds"])


def spread_text(seeds: pd.DataFrame, run: str, metric: str, digits: int = 3) -> str | None:
    """'6.210 [6.202–6.211], n = 3' for a repeated run's metric; None where the run was not repeated."""
    row = seeds[(seeds["run"] == run) & (seeds["metric"] == metric)]
    if row.empty or not row.iloc[0]["n"]:
        return None
    r = row.iloc[0]
    return f"{r['median']:.{digits}f} [{r['min']:.{digits}f}–{r['max']:.{digits}f}], n = {int(r['n'])}"
