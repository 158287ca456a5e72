"""Is the training rule as fast as a plain loop? tokens/s of offloadbench.train against a
hand-written PyTorch loop (or a raw ``deepspeed.initialize`` loop for ZeRO runs) on the same
model, method, data, batch and number of steps.

    make run                                   # the default workflow prepares data and base model
    .venv/bin/python benchmarks/throughput.py  # ~3 minutes on 2 cores
    .venv/bin/python benchmarks/throughput.py --runs lora qlora --repeats 3

Both sides time only optimizer steps (forward, backward, clipping, update; no checkpointing, no
evaluation), count the same real tokens, and use the same threads. The target is a ratio of at
least 0.9. The table goes to stdout and, with --out, to a JSON file.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from offloadbench.config import load_config  # noqa: E402
from offloadbench.env import cpu_model, prepare_process, versions  # noqa: E402
from offloadbench.launch import launcher_argv, train_argv  # noqa: E402
from offloadbench.resolve import resolve_spec  # noqa: E402
from offloadbench.spec import run_spec  # noqa: E402


def batches(data, micro: int, accum: int, steps: int, seed: int):
    """The same stream of micro-batches, cycling over the shuffled training blocks."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(data["train"]["input_ids"], dtype=torch.long)
    order = torch.randperm(len(ids), generator=g)
    need, out, i = steps * accum, [], 0
    while len(out) < need:
        if i + micro > len(order):
            order, i = torch.randperm(len(ids), generator=g), 0
        out.append(ids[order[i : i + micro]])
        i += micro
    return [out[s * accum : (s + 1) * accum] for s in range(steps)]


def plain_loop(spec: dict, data_dir: Path) -> float:
    """tokens/s of a hand-written loop: torch AdamW, or DeepSpeed's engine for ZeRO runs."""
    import datasets

    from offloadbench.training.model import load_model

    tr = spec["training"]
    data = datasets.load_from_disk(str(data_dir))
    steps = batches(data, tr["micro_batch_size"], tr["gradient_accumulation_steps"], tr["max_steps"], spec["seed"])
    torch.manual_seed(spec["seed"])
    ds = copy.deepcopy(spec["deepspeed_config"])  # the resolved spec's: what the rule's run gets
    if ds:
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo")
        ds.update(
            train_micro_batch_size_per_gpu=tr["micro_batch_size"],
            gradient_accumulation_steps=tr["gradient_accumulation_steps"],
            train_batch_size=tr["micro_batch_size"] * tr["gradient_accumulation_steps"],
            gradient_clipping=tr["max_grad_norm"],
            bf16={"enabled": False},
            fp16={"enabled": False},
        )
        if "optimizer" in ds:
            ds["optimizer"]["params"] = {"lr": tr["learning_rate"], "weight_decay": tr["weight_decay"]}
        from transformers.integrations import HfDeepSpeedConfig

        zero3 = ds["zero_optimization"]["stage"] == 3
        # Registering the config makes from_pretrained build the model partitioned (zero.Init);
        # a hand-made zero.Init around from_pretrained fails in transformers' weight init.
        keep_alive = HfDeepSpeedConfig(ds)  # noqa: F841 (transformers holds a weak reference)
        model = load_model(spec, "cpu", "fp32", zero3=zero3)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = None if "optimizer" in ds else torch.optim.AdamW(params, lr=tr["learning_rate"])
        engine, *_ = deepspeed.initialize(model=model, model_parameters=params, optimizer=optimizer, config=ds)
        engine.train()
        t0 = time.perf_counter()
        for micro_batches in steps:
            for b in micro_batches:
                engine.backward(engine(input_ids=b, labels=b).loss)
                engine.step()
        elapsed = time.perf_counter() - t0
    else:
        model = load_model(spec, "cpu", "fp32", zero3=False)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tr["learning_rate"], weight_decay=tr["weight_decay"])
        t0 = time.perf_counter()
        for micro_batches in steps:
            for b in micro_batches:
                (model(input_ids=b, labels=b).loss / len(micro_batches)).backward()
            torch.nn.utils.clip_grad_norm_(params, tr["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
    tokens = sum(b.numel() for s in steps for b in s)
    return tokens / elapsed


def rule(spec: dict, data_dir: Path) -> float:
    """tokens/s that offloadbench.train records for the same run (a fresh process, as the rule)."""
    with tempfile.TemporaryDirectory() as out:
        if spec.get("nvme_dir"):
            spec = {**spec, "nvme_dir": str(Path(out) / "nvme")}
        cmd = train_argv(spec, data_dir, out)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['run']} failed:\n{proc.stderr[-3000:]}")
        return json.loads((Path(out) / "summary.json").read_text())["tokens_per_s"]


def plain_in_subprocess(spec: dict, data_dir: Path) -> float:
    """Each plain loop in a fresh process too, started like the rule (torchrun for DeepSpeed)."""
    cmd = [*launcher_argv(spec), __file__, "--plain-one", json.dumps(spec), str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("TOKENS_PER_S")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"plain loop for {spec['run']} failed:\n{proc.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["full", "lora", "qlora", "zero3_offload_cpu"])
    parser.add_argument("--repeats", type=int, default=1, help="alternate plain/rule this often; best of each")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--plain-one", nargs=2, metavar=("SPEC", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    prepare_process()
    if args.plain_one:  # the child process of plain_in_subprocess
        print("TOKENS_PER_S", plain_loop(json.loads(args.plain_one[0]), Path(args.plain_one[1])))
        return 0
    config = load_config()
    data_dir = args.results / "data" / config["dataset"]["name"]
    model_dir = args.results / "models" / config["model"]["name"]
    if not data_dir.is_dir() or not model_dir.is_dir():
        print(f"error: {data_dir} or {model_dir} is missing; run `make run` first", file=sys.stderr)
        return 2
    threads = os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    rows = []
    for name in args.runs:
        spec = run_spec(config, name)
        spec["model"]["path"] = str(model_dir)
        spec = resolve_spec(spec)
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_in_subprocess(spec, data_dir))
            ours.append(rule(spec, data_dir))
        row = {"run": name, "plain_tokens_per_s": max(plain), "rule_tokens_per_s": max(ours)}
        row["ratio"] = row["rule_tokens_per_s"] / row["plain_tokens_per_s"]
        rows.append(row)
        print(
            f"{name:22s} plain {row['plain_tokens_per_s']:9.0f} tok/s   rule {row['rule_tokens_per_s']:9.0f} tok/s"
            f"   ratio {row['ratio']:.2f}",
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(sys.argv),
                    "threads": threads,
                    "cpu": cpu_model(),
                    "versions": versions(),
                    "date": time.strftime("%Y-%m-%d"),
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0 if all(r["ratio"] >= 0.9 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
