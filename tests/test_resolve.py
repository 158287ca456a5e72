"""A run resolved before it trains: DeepSpeed's "auto" values as Trainer fills them, our NVMe
buffer size and swap folder, the disk it needs, and NVMe optimizer offloads that DeepSpeed would
get wrong refused before any training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY, validate

from offloadbench import owned
from offloadbench.config import load_config
from offloadbench.errors import PreflightError
from offloadbench.memory.counting import largest_tensor
from offloadbench.resolve import resolve
from offloadbench.spec import run_spec

CATALOGUE = REPO / "tests" / "deepspeed_configs"
TINY_MODEL = {"model_type": "llama", **load_config(TINY)["model"]["scratch"]}
# The shape where DeepSpeed 0.19.8's NVMe optimizer offload departed from CPU offload (hidden 192,
# 3 layers, vocabulary 2048): docs/nvme-divergence.md.
DEPARTS = {**TINY_MODEL, "hidden_size": 192, "intermediate_size": 384, "num_hidden_layers": 3, "vocab_size": 2048}


def spec(run: str, **changes) -> dict:
    out = run_spec(load_config(TINY), run)
    out.update(changes)
    return out


def deepspeed_file(tmp_path, source, **zero) -> str:
    ds = json.loads(source.read_text())
    ds["zero_optimization"].update(zero)
    for key in ("comms_config", "monitor_config"):  # not DeepSpeed keys: the config check refuses them
        ds.pop(key, None)
    path = tmp_path / source.name
    path.write_text(json.dumps(ds))
    return str(path)


def test_every_auto_is_filled_as_trainer_fills_it(tmp_path):
    """LLaMA-Factory's ZeRO-3 config: bucket sizes from the hidden size, batch keys from the run."""
    for model in (TINY_MODEL, DEPARTS):
        h = model["hidden_size"]
        s = spec("zero3", deepspeed=deepspeed_file(tmp_path, CATALOGUE / "llamafactory_ds_z3_config.json"))
        ds = resolve(s, model)["deepspeed_config"]
        zero = ds["zero_optimization"]
        assert zero["reduce_bucket_size"] == h * h
        assert zero["stage3_prefetch_bucket_size"] == int(0.9 * h * h)
        assert zero["stage3_param_persistence_threshold"] == 10 * h
        tr = s["training"]
        assert ds["train_batch_size"] == tr["micro_batch_size"] * tr["gradient_accumulation_steps"]
        assert ds["gradient_clipping"] == tr["max_grad_norm"]
        assert ds["bf16"]["enabled"] == ds["fp16"]["enabled"] == "auto", "precision is the training machine's"


def test_nvme_runs_get_their_buffer_size_swap_folder_and_disk_needs():
    resolved = resolve(spec("zero3_offload_nvme"), TINY_MODEL)
    zero = resolved["deepspeed_config"]["zero_optimization"]
    assert zero["offload_param"]["buffer_size"] == largest_tensor(TINY_MODEL)
    swap = owned.swap_dir(resolved["nvme_dir"], "zero3_offload_nvme", "results/runs/zero3_offload_nvme")
    assert zero["offload_param"]["nvme_path"] == zero["offload_optimizer"]["nvme_path"] == str(swap)
    for device in ("cpu", "cuda"):
        assert 0 < resolved["disk"][device]["nvme_swap"] < resolved["disk"][device]["total"]
    assert resolved["launcher"] == ["python"]
    two = resolve({**spec("zero3_offload_cpu"), "world_size": 2}, TINY_MODEL)
    assert two["launcher"][:3] == ["python", "-m", "torch.distributed.run"]
    assert resolve(spec("full"), TINY_MODEL)["deepspeed_config"] is None


def test_an_nvme_optimizer_offload_deepspeed_would_get_wrong_is_refused_before_training(tmp_path):
    with pytest.raises(PreflightError, match=r"zero3_offload_nvme.*misaligned|O_DIRECT.*sub_group_size to 1"):
        resolve(spec("zero3_offload_nvme"), DEPARTS)
    fixed = deepspeed_file(tmp_path, REPO / "configs" / "deepspeed" / "zero3_offload_nvme.json", sub_group_size=1)
    resolve(spec("zero3_offload_nvme", deepspeed=fixed), DEPARTS)  # the work-around: accepted
    resolve(spec("zero3_offload_cpu"), DEPARTS)  # CPU offload is not affected
    resolve(spec("zero3_offload_nvme"), TINY_MODEL)  # nor is this width on one rank


def test_the_resolve_job_says_why_and_fails(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(DEPARTS))
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "offloadbench.resolve", "--spec", json.dumps(spec("zero3_offload_nvme"))),
            *("--model-config", str(config), "--out", str(tmp_path / "spec.json")),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "sub_group_size" in proc.stderr and "docs/nvme-divergence.md" in proc.stderr
    assert not (tmp_path / "spec.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero3", "qlora_zero3"])
def test_a_retyped_llamafactory_config_trains_with_the_values_it_resolves_to(tiny_workflow, tmp_path, run):
    """LLaMA-Factory's ZeRO-3 example (its two non-DeepSpeed blocks removed) trains full and QLoRA
    runs on the tiny profile; the summary records the values DeepSpeed got."""
    from test_workflow import tiny_spec, train_command

    s = tiny_spec(tiny_workflow, run, max_steps=2, save_steps=2)
    s["deepspeed"] = deepspeed_file(tmp_path, CATALOGUE / "llamafactory_ds_z3_config.json")
    proc = subprocess.run(train_command(tiny_workflow, s, tmp_path / "run"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    validate(summary, "summary.schema.json")
    assert summary["status"] == "ok", summary["error"]
    h = TINY_MODEL["hidden_size"]
    assert summary["deepspeed_config"]["zero_optimization"]["reduce_bucket_size"] == h * h
    assert summary["observed"]["zero"]["stage"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("run", ["zero3_offload_cpu", "qlora_offload"])
def test_axolotls_cpu_offload_config_trains_once_bf16_follows_the_run(tiny_workflow, tmp_path, run):
    """Axolotl's zero3_bf16_cpuoffload_all.json forces bf16, which this CPU run cannot train in: it is
    refused before any job with the fix ("auto"); with that one value changed it trains full and
    QLoRA runs with parameters and optimizer offloaded, its short key aliases read as DeepSpeed does."""
    from test_workflow import tiny_spec, train_command

    from offloadbench import dsconfig

    source = CATALOGUE / "axolotl_zero3_bf16_cpuoffload_all.json"
    s = tiny_spec(tiny_workflow, run, max_steps=2, save_steps=2)
    with pytest.raises(dsconfig.DeepSpeedConfigError, match=r'bf16.enabled=true.*set it to "auto"'):
        dsconfig.check_against_run(dsconfig.read(source), s, source.name, dtype="fp32", device="cpu")
    fixed = {**json.loads(source.read_text()), "bf16": {"enabled": "auto"}}
    s["deepspeed"] = str(tmp_path / source.name)
    Path(s["deepspeed"]).write_text(json.dumps(fixed))
    proc = subprocess.run(train_command(tiny_workflow, s, tmp_path / "run"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "ok", summary["error"]
    assert summary["observed"]["offload"]["params"] == summary["observed"]["offload"]["optimizer"] == "cpu"
    assert summary["dtype"] == "fp32", 'bf16 "auto" follows the run (Trainer fills it)'
