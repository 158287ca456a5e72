"""How ZeRO-3 offload scales with the number of processes: world size 1 and 2 measured here, and
DeepSpeed's own memory model for the Llama 3.1 8B and 70B architectures at larger world sizes.

    make run                                   # the default workflow prepares data and base model
    .venv/bin/python benchmarks/scaling.py     # ~2 minutes on 2 cores
    .venv/bin/python benchmarks/scaling.py --repeats 3 --out results/reference/default/scaling.json

Each world size trains the default profile's zero3_offload_cpu run through offloadbench.train,
started exactly as the workflow starts a run with that world_size (offloadbench.launch.train_argv: torchrun, one
process per rank, gloo on CPU). The micro-batch is per process, so world size 2 trains twice the
tokens per step (DeepSpeed's train_batch_size stays "auto"). The machine's cores are shared out
(OMP_NUM_THREADS = cores / world size). Reported per world size: tokens/s over all ranks, and per
process the host RSS peak, the runtime baseline (after imports, before the model) and their
difference. The memory model rows come from deepspeed's estimate_zero3_model_states_mem_needs
(model states only: add activations, which scale with micro-batch x block, not with world size).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from throughput import write_record  # noqa: E402  (its sibling: the JSON record every benchmark writes)

from offloadbench import speed  # noqa: E402
from offloadbench.config import load_config  # noqa: E402
from offloadbench.env import prepare_process  # noqa: E402
from offloadbench.launch import train_argv  # noqa: E402
from offloadbench.resolve import resolve_spec  # noqa: E402
from offloadbench.spec import run_spec  # noqa: E402

GB = 1e9
# Architectures from the models' config.json (meta-llama/Llama-3.1-8B and -70B).
LLAMA = {
    "Llama-3.1-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32),
    "Llama-3.1-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64),
}
# (nodes, GPUs per node): one GPU, two, a full 8-GPU node, two and eight such nodes.
LAYOUTS = [(1, 1), (1, 2), (1, 8), (2, 8), (8, 8)]


def measure(spec: dict, data_dir: Path, world_size: int) -> dict:
    """One run of offloadbench.train at ``world_size``; its summary's throughput and memory."""
    spec = resolve_spec({**spec, "world_size": world_size})
    threads = max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(train_argv(spec, data_dir, out), capture_output=True, text=True, env=env)
        summary_path = Path(out) / "summary.json"
        if proc.returncode != 0 or not summary_path.exists():
            raise RuntimeError(f"world size {world_size} failed:\n{proc.stderr[-3000:]}")
        s = json.loads(summary_path.read_text())
    if s["status"] != "ok":
        raise RuntimeError(f"world size {world_size}: {s['error']}")
    ranks = [
        {
            "rank": r["rank"],
            "host_rss_peak_bytes": r["host_rss_peak_bytes"],
            "host_rss_baseline_bytes": r["host_rss_baseline_bytes"],
            "host_rss_above_baseline_bytes": r["host_rss_peak_bytes"] - r["host_rss_baseline_bytes"],
        }
        for r in s["ranks"]
    ]
    return {
        "world_size": world_size,
        "threads_per_process": threads,
        "train_batch_size": s["train_batch_size"],
        "steps": s["steps"],
        "tokens_per_s": s["tokens_per_s"],
        "tokens_per_s_per_process": s["tokens_per_s"] / world_size,
        "host_rss_peak_bytes_all_processes": sum(r["host_rss_peak_bytes"] for r in ranks),
        "eval_loss": s["eval_loss"],
        "ranks": ranks,
    }


def param_counts(arch: dict) -> tuple[int, int]:
    """(total parameters, parameters of the largest module) of a Llama built on the meta device."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128256, num_key_value_heads=8, tie_word_embeddings=False, **arch)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return total, largest


def memory_model() -> list[dict]:
    """DeepSpeed's ZeRO-3 model-state estimate: GPU memory per process, host memory per node."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    rows = []
    for name, arch in LLAMA.items():
        total, largest = param_counts(arch)
        for nodes, per_node in LAYOUTS:
            for offload in ("cpu", "none"):
                host, gpu, _ = estimate_zero3_model_states_mem_needs(
                    total, largest, per_node, nodes, cpu_offload=offload == "cpu", cpu_offload_params=offload == "cpu"
                )
                rows.append(
                    {
                        "model": name,
                        "params": total,
                        "largest_layer_params": largest,
                        "offload": "params+optimizer:cpu" if offload == "cpu" else "none",
                        "nodes": nodes,
                        "gpus_per_node": per_node,
                        "world_size": nodes * per_node,
                        "gpu_per_process_bytes": gpu,
                        "host_per_node_bytes": host,
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world-sizes", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--run", default="zero3_offload_cpu", help="a run of configs/config.yaml")
    parser.add_argument("--repeats", type=int, default=5, help="alternating runs per world size (at least 3)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the run's max_steps)")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=None, help="also write everything as JSON here")
    args = parser.parse_args()
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: fewer give no spread")
    prepare_process()
    config = load_config()
    spec = run_spec(config, args.run)
    data_dir = args.results / "data" / spec["dataset"]
    model_dir = args.results / "models" / spec["model"]["name"]
    if not data_dir.is_dir() or not model_dir.is_dir():
        print(f"error: {data_dir} or {model_dir} is missing; run `make run` first", file=sys.stderr)
        return 2
    spec["model"] = {**spec["model"], "path": str(model_dir)}
    if args.steps:
        spec["training"] = {**spec["training"], "max_steps": args.steps, "save_steps": args.steps}
    # Alternating world sizes (1, 2, 1, 2, ...), so that a slow minute of the machine hits both.
    runs = {ws: [] for ws in args.world_sizes}
    for _ in range(args.repeats):
        for ws in args.world_sizes:
            runs[ws].append(measure(spec, data_dir, ws))
    rows = []
    for ws, measured in runs.items():
        rates = [r["tokens_per_s"] for r in measured]
        # The run of median throughput stands for the world size (its memory too), with the spread.
        row = sorted(measured, key=lambda r: r["tokens_per_s"])[len(measured) // 2]
        row = {**row, "tokens_per_s_repeats": rates, "tokens_per_s_median": statistics.median(rates)}
        first = runs[args.world_sizes[0]]
        ratio, low, high = speed.ratio_interval(rates, [r["tokens_per_s"] for r in first])
        row["speedup_vs_first"] = {"ratio": ratio, "low": low, "high": high}
        rows.append(row)
        per_proc = ", ".join(
            f"rank {r['rank']}: peak {r['host_rss_peak_bytes'] / 2**20:.0f} MiB"
            f" (+{r['host_rss_above_baseline_bytes'] / 2**20:.0f} over baseline)"
            for r in row["ranks"]
        )
        up = row["speedup_vs_first"]
        print(
            f"world size {ws}: median {row['tokens_per_s_median']:7.0f} tok/s [{min(row['tokens_per_s_repeats']):.0f}-"
            f"{max(row['tokens_per_s_repeats']):.0f} over {args.repeats}], x{up['ratio']:.2f} world size"
            f" {args.world_sizes[0]} (95% {up['low']:.2f}-{up['high']:.2f});"
            f" median run {row['tokens_per_s']:.0f} tok/s ({row['tokens_per_s_per_process']:.0f} per process,"
            f" batch {row['train_batch_size']}, {row['threads_per_process']} threads each); {per_proc}",
            flush=True,
        )
    model_rows = memory_model()
    print("\nDeepSpeed ZeRO-3 model states (estimate_zero3_model_states_mem_needs):")
    print(f"{'model':14s} {'offload':22s} {'nodes x GPUs':>12s} {'GPU/process':>12s} {'host/node':>10s}")
    for r in model_rows:
        print(
            f"{r['model']:14s} {r['offload']:22s} {r['nodes']:>5d} x {r['gpus_per_node']:<4d}"
            f" {r['gpu_per_process_bytes'] / GB:9.1f} GB {r['host_per_node_bytes'] / GB:7.0f} GB"
        )
    if args.out:
        write_record(args.out, run=args.run, cores=os.cpu_count(), measured=rows, memory_model=model_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
