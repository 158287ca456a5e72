"""Several processes: the launcher each run's world_size / num_nodes asks for, and a real two-process
ZeRO-3 CPU-offload run on this machine (gloo) through that launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import SCRATCH, TINY, read_jsonl, small_tokenizer, validate

from offloadbench import launch
from offloadbench.config import load_config
from offloadbench.launch import launcher_argv, launcher_command, torchrun_args, train_argv
from offloadbench.resolve import resolve_spec
from offloadbench.spec import run_spec
from offloadbench.training.world import single_process_rendezvous


def spec(world_size: int = 1, num_nodes: int = 1, run: str = "zero3_offload_cpu") -> dict:
    out = run_spec(load_config(TINY), run)
    out.update(world_size=world_size, num_nodes=num_nodes)
    return out


TORCHRUN = "python -m torch.distributed.run --standalone --nproc_per_node"


def test_one_process_runs_plain_python_deepspeed_too():
    assert launcher_command(spec(run="lora")) == "python"
    assert launcher_command(spec(1)) == "python", "no torchrun agent for one DeepSpeed process"


def test_a_plain_python_deepspeed_process_gets_torchruns_one_process_rendezvous():
    env = {}
    set_ = single_process_rendezvous(env)
    assert env == set_ and {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")} == {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
    }
    assert env["MASTER_ADDR"] == "127.0.0.1" and 0 < int(env["MASTER_PORT"]) < 65536
    launched = {"RANK": "3", "WORLD_SIZE": "8", "MASTER_ADDR": "gpu07"}
    assert single_process_rendezvous(launched) == {} and launched == {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu07",
    }


def test_two_processes_on_one_machine_run_torchrun_standalone():
    assert launcher_command(spec(2)) == f"{TORCHRUN} 2"
    assert launcher_command(spec(2, run="lora")) == f"{TORCHRUN} 2"


def test_tools_get_this_interpreter_and_the_whole_command():
    """launcher_argv with no interpreter named is this one (benchmarks, GPU check, tests);
    train_argv is the train rule's whole command."""
    assert launcher_argv(spec(run="lora")) == [sys.executable]
    assert launcher_argv(spec(2))[:3] == [sys.executable, "-m", "torch.distributed.run"]
    cmd = train_argv(spec(2), "data", "out")
    assert cmd[6:9] == ["-m", "offloadbench.train", "--spec"] and cmd[-4:] == ["--data", "data", "--out", "out"]
    assert json.loads(cmd[9]) == spec(2)
    assert train_argv(spec(1), "data", "out")[:3] == [sys.executable, "-m", "offloadbench.train"]


def test_two_machines_run_one_rendezvous_agent_per_node_through_srun():
    cmd = launcher_command(spec(8, 2))
    assert cmd.startswith("srun --nodes 2 --ntasks-per-node 1 ")
    assert cmd.endswith("python -m offloadbench.launch --nnodes 2 --nproc-per-node 4")


def test_rendezvous_comes_from_the_slurm_allocation(monkeypatch):
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu07,gpu08"}
    args = torchrun_args(2, 4, env)
    assert args == [
        "--nnodes=2",
        "--nproc_per_node=4",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=gpu07:29742",
        "--rdzv_id=4242",
    ]
    # A compressed node list is expanded by Slurm's own scontrol.
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="gpu01\ngpu02\n")

    monkeypatch.setattr(launch.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    assert "--rdzv_endpoint=gpu01:29742" in torchrun_args(2, 4, {**env, "SLURM_JOB_NODELIST": "gpu[01-02]"})
    assert calls == [["scontrol", "show", "hostnames", "gpu[01-02]"]]
    with pytest.raises(RuntimeError, match="Slurm allocation"):
        torchrun_args(2, 4, {})


def test_launch_main_hands_the_training_command_to_torchrun(monkeypatch):
    import torch.distributed.run

    seen = []
    monkeypatch.setattr(torch.distributed.run, "main", lambda args: seen.append(args))
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "n1,n2")
    launch.main(["--nnodes", "2", "--nproc-per-node", "1", "-m", "offloadbench.train", "--spec", "{}"])
    assert seen[0][:2] == ["--nnodes=2", "--nproc_per_node=1"]
    assert seen[0][-4:] == ["-m", "offloadbench.train", "--spec", "{}"]


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    """A two-layer Llama of tests/configs/tiny.yaml's width (hidden 128) and token blocks."""
    import datasets

    from offloadbench.model import build_model

    root = tmp_path_factory.mktemp("dist")
    tok = small_tokenizer()
    build_model({**SCRATCH, "hidden_size": 128, "intermediate_size": 256}, tok, seed=1).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    rng = np.random.default_rng(0)

    def blocks(n):
        ids = rng.integers(0, len(tok), size=(n, 64)).astype(np.int32)
        return datasets.Dataset.from_dict({"input_ids": ids, "labels": ids.copy()})

    datasets.DatasetDict({"train": blocks(64), "validation": blocks(8)}).save_to_disk(str(root / "data"))
    return root


@pytest.mark.slow
def test_two_processes_train_zero3_offload_and_rank_0_reports(tiny_inputs, tmp_path):
    """world_size 2 through the rule's own launcher: DeepSpeed's train_batch_size doubles (its batch
    keys stay "auto"), metrics.jsonl has one line per step (rank 0's), and the summary lists both
    ranks' memory."""
    s = spec(2)
    s["model"] = {"path": str(tiny_inputs / "model"), "revision": None, "name": "t"}
    s["training"].update(max_steps=4, save_steps=4, eval_max_blocks=4)
    out = tmp_path / "run"
    cmd = train_argv(resolve_spec(s), tiny_inputs / "data", out)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    validate(summary, "summary.schema.json")
    assert summary["status"] == "ok", summary["error"]
    tr = s["training"]
    assert summary["world_size"] == 2
    assert summary["train_batch_size"] == tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * 2 == 8
    assert summary["tokens_seen"] == summary["steps"] * summary["train_batch_size"] * 64
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4], "one line per step: rank 0's only"
    for row in rows:
        validate(row, "metrics.schema.json")
    ranks = summary["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["local_rank"] for r in ranks] == [0, 1]
    assert ranks[0]["host_rss_peak_bytes"] == summary["host_rss_peak_bytes"]
    for r in ranks:
        assert 0 < r["host_rss_baseline_bytes"] <= r["host_rss_peak_bytes"]
    assert summary["host_rss_baseline_bytes"] == ranks[0]["host_rss_baseline_bytes"]
    assert summary["rng"]["torch_initial_seed"] == s["seed"]
    assert (out / "model").is_dir() and not (out / "checkpoints").exists()
