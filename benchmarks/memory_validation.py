"""The memory model against published GPU measurements: every run of
benchmarks/memory_validation/sources.yaml predicted with offloadbench.memory.predict, beside the
peak memory its source measured.

    PYTHONPATH=src .venv/bin/python benchmarks/memory_validation.py    # writes results/reference/memory-validation.*

Writes memory-validation.csv (one row per source run), memory-validation.md (the table, the rows
outside +-25% and the command) and memory-validation.png (predicted vs published, log axes, the
+-25% band) into --out-dir. ratio = published / predicted, as the package's compare() has it
(measured / predicted). Nothing is fitted: each row is predicted from its setup alone, and a
measurement of NVML / nvidia-smi gets the CUDA context (offloadbench.memory.measured).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from offloadbench.memory.counting import load_model_config  # noqa: E402
from offloadbench.memory.measured import KINDS, comparable_gpu_bytes  # noqa: E402
from offloadbench.memory.predict import predict  # noqa: E402
from offloadbench.memory.units import GiB  # noqa: E402

SOURCES = REPO / "benchmarks" / "memory_validation" / "sources.yaml"
MODELS = REPO / "configs" / "models"
OUT = REPO / "results" / "reference"
COMMAND = "PYTHONPATH=src .venv/bin/python benchmarks/memory_validation.py"
BAND = 0.25
COLUMNS = (
    "id",
    "source",
    "setup",
    "what_was_measured",
    "published_gib",
    "predicted_gib",
    "ratio",
    "within_25pct",
    "predicted_components_gib",
    "note",
    "location",
    "quote",
)
UNITS = {"GiB": GiB, "GB": 1e9}


def spec_of(row: dict) -> dict:
    """The run spec predict() reads, from a row's setup (the memory model's inputs)."""
    s = row["setup"]
    lora = s.get("lora") or {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": []}
    z3 = s.get("zero3")
    ds = None
    if z3:
        zero = {"stage": 3, "offload_param": {"device": z3["params"]}, "offload_optimizer": {"device": z3["optimizer"]}}
        ds = {"bf16": {"enabled": s["dtype"] == "bf16"}, "zero_optimization": zero}
    return {
        "run": row["id"],
        "method": s["method"],
        "world_size": s["world_size"],
        "num_nodes": 1,
        "deepspeed_config": ds,
        "training": {
            "dtype": s["dtype"],
            "micro_batch_size": s["micro_batch_size"],
            "gradient_accumulation_steps": 1,
            "gradient_checkpointing": s["gradient_checkpointing"],
            "optimizer": s["optimizer"],
            "activation_offload": s.get("activation_offload", False),
            "max_steps": 1,
        },
        "lora": {**lora, "target_modules": list(lora["target_modules"])},
        "quantization": {
            "quant_type": "nf4",
            "double_quant": s.get("double_quant", True),
            "prepare_kbit": s.get("prepare_kbit", True),
        },
    }


def describe(s: dict) -> str:
    parts = [s["model"].removesuffix(".json"), s["method"], f"{s['world_size']} GPU(s)"]
    if s.get("zero3"):
        z = s["zero3"]
        parts.append(f"ZeRO-3 (params {z['params']}, optimizer {z['optimizer']})")
    parts += [s["dtype"], f"micro-batch {s['micro_batch_size']} x {s['block_size']} tokens"]
    parts.append("gradient checkpointing" if s["gradient_checkpointing"] else "no checkpointing")
    if s.get("lora") and s["method"] != "full":
        targets = "/".join(t.removesuffix("_proj") for t in s["lora"]["target_modules"])
        parts.append(f"LoRA r={s['lora']['r']} on {targets}")
    parts.append(s["optimizer"])
    return ", ".join(parts)


def validate(row: dict) -> dict:
    """One CSV row: the source's measurement beside the prediction for its setup."""
    s, m = row["setup"], row["measured"]
    pred = predict(spec_of(row), load_model_config(str(MODELS / s["model"])), s["block_size"], "cuda")
    gpu = pred["predicted"]["gpu"]
    predicted = comparable_gpu_bytes(gpu["total"], m["kind"])
    published = row["published"]["value"] * UNITS[row["published"]["unit"]]
    ratio = published / predicted
    components = "; ".join(
        f"{c} {gpu[c] / GiB:.2f}" for c in ("weights", "gradients", "optimizer", "activations") if gpu[c]
    )
    if predicted != gpu["total"]:
        components += f"; CUDA context {(predicted - gpu['total']) / GiB:.2f}"
    within = abs(ratio - 1) <= BAND
    note = row.get("framework_differences") or []
    return {
        "id": row["id"],
        "source": row["source"],
        "setup": describe(s),
        "what_was_measured": f"{m['kind']} per {m['per']}: {m['detail']} ({KINDS[m['kind']]})",
        "published_gib": f"{published / GiB:.2f}",
        "predicted_gib": f"{predicted / GiB:.2f}",
        "ratio": f"{ratio:.3f}",
        "within_25pct": "yes" if within else "no",
        "predicted_components_gib": components,
        "note": " | ".join(note + ([row["outside_band"]] if not within and row.get("outside_band") else [])),
        "location": row["location"],
        "quote": row["quote"],
    }


def rows(sources: Path = SOURCES) -> list[dict]:
    return [validate(r) for r in yaml.safe_load(sources.read_text())["rows"]]


def write_csv(table: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table)


def write_markdown(table: list[dict], path: Path) -> None:
    inside = sum(r["within_25pct"] == "yes" for r in table)
    lines = [
        "# The memory model against published GPU measurements",
        "",
        f"Written by `{COMMAND}` from `benchmarks/memory_validation/sources.yaml`; do not edit by hand. "
        "ratio = published / predicted. The prediction is offloadbench.memory.predict for the source's setup, "
        "plus the CUDA context (~0.5 GiB) where the source read NVML / nvidia-smi or did not say how it measured.",
        "",
        f"{inside} of {len(table)} rows within ±{BAND:.0%}; {len({r['source'] for r in table})} sources.",
        "",
        "| id | source | setup | measured | published GiB | predicted GiB | ratio |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in table:
        kind = r["what_was_measured"].split(":")[0]
        lines.append(
            f"| {r['id']} | {r['source']} | {r['setup']} | {kind} | {r['published_gib']} | {r['predicted_gib']} | "
            f"{r['ratio']}{'' if r['within_25pct'] == 'yes' else ' ✗'} |"
        )
    lines += ["", "## Rows outside ±25%", ""]
    outside = [r for r in table if r["within_25pct"] == "no"]
    lines += [f"- **{r['id']}** (ratio {r['ratio']}): {r['note']}" for r in outside] or ["None."]
    lines += ["", "## Where each number comes from", ""]
    lines += [f"- **{r['id']}**: {r['location']}. Quote: “{r['quote']}”" for r in table]
    path.write_text("\n".join(lines) + "\n")


def write_figure(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.5, 6))
    x = [float(r["predicted_gib"]) for r in table]
    y = [float(r["published_gib"]) for r in table]
    lo, hi = min(x + y) / 1.6, max(x + y) * 1.6
    line = [lo, hi]
    ax.plot(line, line, color="black", lw=1, label="published = predicted")
    band = ([v * (1 - BAND) for v in line], [v * (1 + BAND) for v in line])
    ax.fill_between(line, *band, color="tab:green", alpha=0.15, label="±25%")
    sources = sorted({r["source"] for r in table})
    for i, source in enumerate(sources):
        pts = [(a, b) for a, b, r in zip(x, y, table, strict=True) if r["source"] == source]
        ax.scatter(*zip(*pts, strict=True), s=40, marker="osD^v"[i % 5], label=source, zorder=3)
    for a, b, r in zip(x, y, table, strict=True):
        ax.annotate(r["id"], (a, b), fontsize=6, xytext=(4, -3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [t for t in (2, 4, 8, 16, 32, 64, 128) if lo <= t <= hi]
    for axis in (ax.xaxis, ax.yaxis):  # plain GiB numbers at powers of two, no minor labels
        axis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        axis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("predicted peak GPU memory per device (GiB)")
    ax.set_ylabel("published measured peak (GiB)")
    ax.set_title("offloadbench.memory vs published GPU measurements")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=150, metadata={"Software": None})
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT)
    parser.add_argument("--sources", type=Path, default=SOURCES)
    args = parser.parse_args(argv)
    table = rows(args.sources)
    write_csv(table, args.out_dir / "memory-validation.csv")
    write_markdown(table, args.out_dir / "memory-validation.md")
    write_figure(table, args.out_dir / "memory-validation.png")
    for r in table:
        print(f"{r['id']:42s} published {r['published_gib']:>7s} predicted {r['predicted_gib']:>7s} ratio {r['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
