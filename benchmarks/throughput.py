"""Is the training rule as fast as a plain loop? tokens/s of offloadbench.train against a
hand-written PyTorch loop (or a raw ``deepspeed.initialize`` loop for ZeRO runs) on the same
model, method, data, batch and number of steps.

    make run                                   # the default workflow prepares data and base models
    .venv/bin/python benchmarks/throughput.py  # 5 alternating repeats, ~10 minutes on 2 cores
    .venv/bin/python benchmarks/throughput.py --runs lora qlora --repeats 7

Both sides time only optimizer steps (forward, backward, clipping, update; no checkpointing, no
evaluation), count the same real tokens, and use the same threads; a run with activation offload
runs the plain loop under torch's own ``save_on_cpu``, as the rule does under its counting copy.
Each repeat runs the plain loop and then the rule, each in a fresh process, so that a slow minute
of the machine hits both sides alike. Per run: the median tokens/s of each side over the repeats
with their range, and the ratio rule / plain of the medians with its 95% bootstrap interval over
the repeats (offloadbench.speed).
The target is a ratio of at least 0.9, judged on the interval: met (the whole interval is at least
0.9), missed (all of it below), or undecided (the interval straddles 0.9: the machine was too
noisy for this many repeats; run more). Exit status 0 when every run met it, 1 when one missed
it, 3 when none missed but one was undecided, 2 when the inputs are missing. The table goes to
stdout and, with --out, to a JSON file with every repeat.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from offloadbench import speed  # noqa: E402
from offloadbench.config import load_config  # noqa: E402
from offloadbench.env import cpu_model, git_commit, prepare_process, versions  # noqa: E402
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


def saved_activations(spec: dict):
    """torch's own save_on_cpu where the run offloads activations (training.activation_offload), so
    the plain loop does the work the rule's hooks do; otherwise nothing."""
    import contextlib

    if spec["training"]["activation_offload"]:
        return torch.autograd.graph.save_on_cpu(pin_memory=False)
    return contextlib.nullcontext()


def plain_loop(spec: dict, data_dir: Path) -> float:
    """tokens/s of a hand-written loop: torch AdamW, or DeepSpeed's engine for ZeRO runs."""
    import datasets

    from offloadbench.training.model import load_model

    tr = spec["training"]
    fused = tr["optimizer"] == "adamw_torch_fused"  # the implementation Trainer builds for the run
    data = datasets.load_from_disk(str(data_dir))
    steps = batches(data, tr["micro_batch_size"], tr["gradient_accumulation_steps"], tr["max_steps"], spec["seed"])
    torch.manual_seed(spec["seed"])
    ds = copy.deepcopy(spec["deepspeed_config"])  # the resolved spec's: what the rule's run gets
    if ds:
        import deepspeed

        from offloadbench.training.world import single_process_rendezvous

        if spec["world_size"] == 1:
            single_process_rendezvous()  # started as the rule starts it: plain python
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
        optimizer = None if "optimizer" in ds else torch.optim.AdamW(params, lr=tr["learning_rate"], fused=fused)
        engine, *_ = deepspeed.initialize(model=model, model_parameters=params, optimizer=optimizer, config=ds)
        engine.train()
        t0 = time.perf_counter()
        for micro_batches in steps:
            for b in micro_batches:
                with saved_activations(spec):
                    engine.backward(engine(input_ids=b, labels=b).loss)
                engine.step()
        elapsed = time.perf_counter() - t0
    else:
        model = load_model(spec, "cpu", "fp32", zero3=False)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=tr["learning_rate"], weight_decay=tr["weight_decay"], fused=fused)
        t0 = time.perf_counter()
        for micro_batches in steps:
            for b in micro_batches:
                with saved_activations(spec):
                    (model(input_ids=b, labels=b).loss / len(micro_batches)).backward()
            torch.nn.utils.clip_grad_norm_(params, tr["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - t0
    tokens = sum(b.numel() for s in steps for b in s)
    return tokens / elapsed


def rule(spec: dict, data_dir: Path) -> float:
    """tokens/s that offloadbench.train records for the same run (a fresh process, as the rule)."""
    return rule_summary(spec, data_dir)["tokens_per_s"]


def rule_summary(spec: dict, data_dir: Path, env: dict | None = None) -> dict:
    """summary.json of offloadbench.train on ``spec`` in a fresh process and a temporary folder."""
    with tempfile.TemporaryDirectory() as out:
        if spec.get("nvme_dir"):
            spec = {**spec, "nvme_dir": str(Path(out) / "nvme")}
        cmd = train_argv(spec, data_dir, out)
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['run']} failed:\n{proc.stderr[-3000:]}")
        return json.loads((Path(out) / "summary.json").read_text())


def plain_in_subprocess(spec: dict, data_dir: Path) -> float:
    """Each plain loop in a fresh process too, started like the rule (torchrun for DeepSpeed)."""
    cmd = [*launcher_argv(spec), __file__, "--plain-one", json.dumps(spec), str(data_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("TOKENS_PER_S")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"plain loop for {spec['run']} failed:\n{proc.stderr[-3000:]}")
    return float(lines[-1].split()[1])


def workflow_inputs(runs: list[str], results: Path) -> tuple[Path, dict] | None:
    """The default profile's tokenized data and the runs' specs pointing at the models the workflow
    built in ``results``; None (with the error printed) when `make run` has not made them."""
    config = load_config()
    data_dir = results / "data" / config["dataset"]["name"]
    specs = {name: run_spec(config, name) for name in runs}
    for spec in specs.values():  # the run's own model (base or memory scale) in that results folder
        spec["model"]["path"] = str(results / Path(spec["model"]["path"]).relative_to("results"))
    missing = [p for p in {data_dir, *(Path(s["model"]["path"]) for s in specs.values())} if not p.is_dir()]
    if missing:
        print(f"error: {', '.join(map(str, sorted(missing)))} missing; run `make run` first", file=sys.stderr)
        return None
    return data_dir, specs


def write_record(path: Path, **fields) -> None:
    """A benchmark's JSON file: the command as typed, commit, CPU, versions and date, then ``fields``."""
    record = {
        "command": " ".join(sys.argv),
        "commit": git_commit(REPO),
        "cpu": cpu_model(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d"),
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


def exit_status(rows: list[dict]) -> int:
    """0 when every row met its goal, 1 when one missed it, 3 when none missed but one was undecided."""
    verdicts = {r["verdict"] for r in rows}
    return 1 if "missed" in verdicts else 3 if "undecided" in verdicts else 0


TARGET = 0.9  # rule / plain tokens/s


def judge(plain: list[float], ours: list[float], target: float = TARGET) -> dict:
    """The ratio of the medians (ours / plain) with its interval over the repeats, and whether it
    is at least ``target`` beyond that interval."""
    ratio, low, high = speed.ratio_interval(ours, plain)
    verdict = "met" if low >= target else "missed" if high < target else "undecided"
    return {"ratio": ratio, "ratio_low": low, "ratio_high": high, "verdict": verdict}


def row_text(row: dict) -> str:
    p, r = row["plain_tokens_per_s"], row["rule_tokens_per_s"]
    return (
        f"{row['run']:20s} plain {statistics.median(p):7.0f} [{min(p):.0f}-{max(p):.0f}]"
        f"   rule {statistics.median(r):7.0f} [{min(r):.0f}-{max(r):.0f}] tok/s"
        f"   ratio {row['ratio']:.2f} (95% {row['ratio_low']:.2f}-{row['ratio_high']:.2f}, n={len(p)})"
        f"   {row['verdict']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=["full", "lora", "qlora", "qlora_offload"])
    parser.add_argument("--repeats", type=int, default=5, help="alternating plain/rule pairs per run (at least 3)")
    parser.add_argument("--results", type=Path, default=REPO / "results", help="the workflow's results folder")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--plain-one", nargs=2, metavar=("SPEC", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    prepare_process()
    if args.plain_one:  # the child process of plain_in_subprocess
        print("TOKENS_PER_S", plain_loop(json.loads(args.plain_one[0]), Path(args.plain_one[1])))
        return 0
    if args.repeats < 3:
        parser.error("--repeats must be at least 3: fewer give no interval to judge the ratio on")
    found = workflow_inputs(args.runs, args.results)
    if found is None:
        return 2
    data_dir, specs = found
    threads = os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(threads)
    rows = []
    for name, spec in specs.items():
        spec = resolve_spec(spec)
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_in_subprocess(spec, data_dir))
            ours.append(rule(spec, data_dir))
        rows.append({"run": name, "plain_tokens_per_s": plain, "rule_tokens_per_s": ours, **judge(plain, ours)})
        print(row_text(rows[-1]), flush=True)
    if args.out:
        write_record(args.out, threads=threads, target=TARGET, rows=rows)
    return exit_status(rows)


if __name__ == "__main__":
    sys.exit(main())
