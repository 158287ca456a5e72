"""Compare two working folders of the same profile (tools/slurm_test.sh: one run through Slurm, one
locally): one line per check, ``PASS|FAIL<TAB>name<TAB>detail``; exit status 1 if any failed.

    python tools/slurm_compare.py <slurm work dir> <local work dir> --config tests/configs/tiny.yaml

- outputs: the same files under results/ in both (logs, NVMe swap and Snakemake's own state aside);
- losses: every run's (and pretraining's) loss at every logged step, from metrics.jsonl, and each
  run's eval loss and status from summary.json, equal (the same machine, seed and threads give the
  same numbers; timings are not compared);
- tables: results/tables/comparison.csv and relative.csv have a row for every run of the config in
  both, with the same columns, and the loss columns agree;
- claims: results/claims.json has the same verdict for every claim.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

SKIP = ("results/logs/", "results/nvme/", "results/benchmarks/")


def outputs(root: Path) -> set[str]:
    found = set()
    for path in (root / "results").rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(SKIP) and "/checkpoints/" not in rel:
            found.add(rel)
    return found


def losses(path: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows]


def table(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = next(iter(rows[0])) if rows else "run"
    return {row[key]: row for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("slurm", type=Path)
    parser.add_argument("local", type=Path)
    parser.add_argument("--config", type=Path, help="the profile both ran (merged onto configs/config.yaml)")
    args = parser.parse_args(argv)
    a, b = args.slurm, args.local
    results: list[tuple[bool, str, str]] = []

    def check(ok: bool, name: str, detail: str) -> None:
        results.append((ok, name, detail))

    out_a, out_b = outputs(a), outputs(b)
    only = sorted(out_a ^ out_b)
    check(
        not only and bool(out_a), "same outputs", f"{len(out_a)} files" + (f"; in one only: {only[:5]}" if only else "")
    )

    from offloadbench.config import load_config

    config = load_config(*([args.config] if args.config else []))
    runs = [r["name"] for r in config["runs"]]
    curves = [f"results/runs/{run}/metrics.jsonl" for run in runs]
    curves += sorted(p.relative_to(b).as_posix() for p in (b / "results/pretrain").glob("*/metrics.jsonl"))
    differ, steps = [], 0
    for rel in curves:
        la, lb = losses(a / rel), losses(b / rel)
        steps += len(lb)
        if la != lb or not lb:
            worst = max((abs(x[1] - y[1]) for x, y in zip(la, lb, strict=False)), default=float("nan"))
            differ.append(f"{rel.split('/')[2]} ({len(la)} vs {len(lb)} steps, max |diff| {worst:.3g})")
    check(
        not differ,
        "losses equal per run and step",
        f"{len(curves)} curves, {steps} steps" + (f"; differ: {differ}" if differ else ""),
    )

    bad = []
    for run in runs:
        sa = json.loads((a / f"results/runs/{run}/summary.json").read_text())
        sb = json.loads((b / f"results/runs/{run}/summary.json").read_text())
        for key in ("status", "eval_loss", "train_loss_final", "train_batch_size", "steps", "tokens_seen"):
            if sa.get(key) != sb.get(key):
                bad.append(f"{run}.{key}: {sa.get(key)} vs {sb.get(key)}")
        if sb.get("status") != "ok":
            bad.append(f"{run}: status {sb.get('status')}")
    base_a, base_b = (json.loads((d / "results/eval/base.json").read_text()) for d in (a, b))
    if base_a.get("eval_loss") != base_b.get("eval_loss"):
        bad.append(f"base eval_loss {base_a.get('eval_loss')} vs {base_b.get('eval_loss')}")
    check(
        not bad, "eval losses and status equal", f"{len(runs)} runs + base model, all ok" if not bad else "; ".join(bad)
    )

    for name in ("comparison", "relative"):
        ta, tb = (table(d / f"results/tables/{name}.csv") for d in (a, b))
        problems = [f"missing rows {sorted(set(runs) - set(t))}" for t in (ta, tb) if set(runs) - set(t)]
        cols = next(iter(tb.values())).keys() if tb else []
        if ta and tb and next(iter(ta.values())).keys() != cols:
            problems.append("columns differ")
        loss_cols = [c for c in cols if any(w in c.lower() for w in ("loss", "gain", "ppl", "verdict"))]
        for run in set(ta) & set(tb):
            for col in loss_cols:
                if ta[run][col] != tb[run][col]:
                    problems.append(f"{run}.{col}: {ta[run][col]} vs {tb[run][col]}")
                if "twin" not in col and tb[run][col] in ("", "nan", "None"):  # runs without a twin: empty
                    problems.append(f"{run}.{col} empty")
        detail = f"{len(tb)} rows x {len(cols)} columns; loss columns {loss_cols} equal"
        check(not problems, f"table {name} complete", detail if not problems else "; ".join(problems[:6]))

    ca, cb = (json.loads((d / "results/claims.json").read_text()) for d in (a, b))
    va = {c["id"]: c["verdict"] for c in ca["claims"]}
    vb = {c["id"]: c["verdict"] for c in cb["claims"]}
    verdicts = ", ".join(f"{k} {v}" for k, v in sorted(vb.items(), key=lambda kv: int(kv[0][1:])))
    diff = {k: (va.get(k), vb.get(k)) for k in va.keys() | vb.keys() if va.get(k) != vb.get(k)}
    check(not diff, "claims: identical verdicts", verdicts + (f"; differ (slurm, local): {diff}" if diff else ""))

    for ok, name, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}\t{name}\t{detail}")
    return 0 if all(ok for ok, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
