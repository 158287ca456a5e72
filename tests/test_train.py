"""Training building blocks on a real tiny model: 4-bit is really 4-bit, only adapters train,
parameter counts are right, and a run that cannot work is refused before it starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SCRATCH, small_tokenizer

from offloadbench.config import load_config
from offloadbench.env import choose_dtype
from offloadbench.errors import PreflightError
from offloadbench.model import build_model
from offloadbench.spec import run_spec
from offloadbench.training.model import count_params, load_model
from offloadbench.training.offload import offload_label


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model")
    tok = small_tokenizer()
    build_model(SCRATCH, tok, seed=1).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def spec_for(run: str, model_dir, **training) -> dict:
    spec = run_spec(load_config(), run)
    spec["model"] = {"path": str(model_dir), "revision": None, "name": "t"}
    spec["training"].update(training)
    return spec


def test_qlora_targets_are_packed_4bit_and_only_lora_trains(model_dir):
    import bitsandbytes as bnb

    model = load_model(spec_for("qlora", model_dir), "cpu", "fp32", zero3=False)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    base = q_proj.base_layer
    assert isinstance(base, bnb.nn.Linear4bit)
    assert base.weight.dtype == torch.uint8, "4-bit weights must be stored packed in uint8"
    assert base.weight.numel() * 2 == 64 * 64, "two 4-bit values per byte"
    assert base.weight.quant_state.quant_type == "nf4"
    assert base.weight.quant_state.nested, "double quantization is on"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    targets = spec_for("qlora", model_dir)["lora"]["target_modules"]  # the default: every projection
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == set(targets), "adapters on exactly the configured modules"
    partial = spec_for("qlora", model_dir)
    partial["lora"]["target_modules"] = ["q_proj", "v_proj"]
    kept = {n for n, p in load_model(partial, "cpu", "fp32", zero3=False).named_parameters() if p.requires_grad}
    assert kept and not any("k_proj.lora" in n for n in kept)


def test_param_counts_are_logical_for_4bit_models(model_dir):
    full = load_model(spec_for("full", model_dir), "cpu", "fp32", zero3=False)
    qlora = load_model(spec_for("qlora", model_dir), "cpu", "fp32", zero3=False)
    lora = load_model(spec_for("lora", model_dir), "cpu", "fp32", zero3=False)
    n_full, t_full = count_params(full)
    n_q, t_q = count_params(qlora)
    n_l, t_l = count_params(lora)
    # r 16 on every projection of 2 layers: q, o 64->64; k, v 64->32 (2 kv heads); gate, up 64->128;
    # down 128->64: r x (in + out) each.
    r = spec_for("lora", model_dir)["lora"]["r"]
    adapters = 2 * r * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 128))
    assert adapters == 32_768
    assert n_full == t_full == sum(p.numel() for p in full.parameters())
    assert t_q == t_l == adapters
    assert n_q == n_l == n_full + adapters


def test_lora_target_that_matches_nothing_is_refused(model_dir):
    spec = spec_for("lora", model_dir)
    spec["lora"]["target_modules"] = ["query_key_value"]
    with pytest.raises(PreflightError, match="lora.target_modules.*q_proj"):
        load_model(spec, "cpu", "fp32", zero3=False)


def test_offload_labels_come_from_the_deepspeed_config_and_switches():
    config = load_config()
    label = offload_label(
        run_spec(config, "qlora_offload"), json.loads(open(run_spec(config, "qlora_offload")["deepspeed"]).read())
    )
    assert label == {"params": "cpu", "optimizer": "cpu", "activations": "cpu"}
    assert offload_label(run_spec(config, "qlora_paged"), None)["optimizer"] == "paged"
    assert offload_label(run_spec(config, "full"), None) == {
        "params": "none",
        "optimizer": "none",
        "activations": "none",
    }


def test_dtype_follows_the_hardware_and_refuses_what_it_lacks():
    assert choose_dtype("auto") == ("cpu", "fp32")  # no GPU on the test machines
    assert choose_dtype("bf16") == ("cpu", "bf16")
    with pytest.raises(PreflightError, match="training.dtype.*fp16"):
        choose_dtype("fp16")


def test_run_whose_predicted_disk_exceeds_the_free_space_stops_before_loading(model_dir, tmp_path, monkeypatch):
    from collections import namedtuple

    from offloadbench.resolve import resolve_spec
    from offloadbench.training import lifecycle

    spec = spec_for("zero3_offload_nvme", model_dir)
    spec["nvme_dir"] = str(tmp_path / "swap")
    spec = resolve_spec(spec)
    assert spec["disk"]["cpu"]["nvme_swap"] > 0 and spec["disk"]["cpu"]["total"] > spec["disk"]["cpu"]["nvme_swap"]
    lifecycle.check_disk(spec, tmp_path / "run", "cpu")  # this disk has room: no error
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(lifecycle.shutil, "disk_usage", lambda path: usage(2**30, 2**30, 1024))
    with pytest.raises(PreflightError) as err:
        lifecycle.check_disk(spec, tmp_path / "run", "cpu")
    message = str(err.value)
    assert "run zero3_offload_nvme" in message and str(tmp_path) in message
    assert "NVMe swap files" in message and "resume checkpoints" in message and "0.00 GiB is free" in message


def test_nvme_run_whose_swap_buffers_cannot_be_locked_is_refused_before_it_trains(model_dir, tmp_path):
    # DeepSpeed's NVMe swappers mlock their buffers whatever pin_memory says; under a container's
    # default 8 MiB limit the run aborted inside deepspeed.initialize (SIGABRT). The resolve step
    # refuses it first, naming the need, the limit and the fixes, for real: a process without
    # CAP_IPC_LOCK (root here has it) under a 1 MiB limit.
    import shutil
    import subprocess
    import sys

    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        pytest.skip("setpriv and prlimit (util-linux) are needed")
    spec = spec_for("zero3_offload_nvme", model_dir)
    spec["nvme_dir"] = str(tmp_path / "swap")
    cmd = [sys.executable, "-m", "offloadbench.resolve", "--spec", json.dumps(spec), "--model-config",
           str(model_dir), "--out", str(tmp_path / "spec.json")]  # fmt: skip
    limited = ["setpriv", "--bounding-set=-ipc_lock", "--inh-caps=-ipc_lock", "--"]
    limited += ["prlimit", "--memlock=1048576:1048576"]
    proc = subprocess.run([*limited, *cmd], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert not (tmp_path / "spec.json").exists()
    for text in ("run zero3_offload_nvme", "mlock", "may lock only 1 MiB (ulimit -l)", "--ulimit memlock=-1",
                 "--cap-add IPC_LOCK"):  # fmt: skip
        assert text in proc.stderr, (text, proc.stderr)
    # The same process with the capability (or without a limit) resolves it, and the spec says what it locks.
    unlimited = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert unlimited.returncode == 0, unlimited.stderr
    resolved = json.loads((tmp_path / "spec.json").read_text())
    assert resolved["locked_bytes"]["cpu"] > resolved["locked_bytes"]["cuda"] > 2**20  # fp32 buffers on the CPU
    # Runs without NVMe lock nothing and are never refused for it.
    cpu = spec_for("zero3_offload_cpu", model_dir)
    proc = subprocess.run([*limited, *cmd[:4], json.dumps(cpu), *cmd[5:]], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def test_the_training_job_checks_locked_memory_where_it_runs(model_dir, tmp_path, monkeypatch):
    from offloadbench.resolve import resolve_spec
    from offloadbench.training import lifecycle

    spec = spec_for("zero3_offload_nvme", model_dir)
    spec["nvme_dir"] = str(tmp_path / "swap")
    spec = resolve_spec(spec)
    monkeypatch.setattr(lifecycle, "lockable_bytes", lambda: 2**20)  # another machine with a 1 MiB limit
    with pytest.raises(PreflightError, match=r"locks at least \d+ MiB .* may lock only 1 MiB"):
        lifecycle.check_locked_memory(spec, "cpu")
    monkeypatch.setattr(lifecycle, "lockable_bytes", lambda: None)  # unlimited, or CAP_IPC_LOCK
    lifecycle.check_locked_memory(spec, "cpu")
    monkeypatch.setattr(lifecycle, "lockable_bytes", lambda: 2**20)
    lifecycle.check_locked_memory(resolve_spec(spec_for("zero3_offload_cpu", model_dir)), "cpu")


def test_lockable_bytes_reads_the_capability_and_the_limit(monkeypatch, tmp_path):
    import resource

    from offloadbench import env

    status = tmp_path / "status"
    monkeypatch.setattr(env, "Path", lambda p: status if p == "/proc/self/status" else Path(p))
    monkeypatch.setattr(resource, "getrlimit", lambda what: (8 * 2**20, 8 * 2**20))
    status.write_text("Name: python\nCapEff:\t000001fffeffffff\n")  # root: CAP_IPC_LOCK held
    assert env.lockable_bytes() is None
    status.write_text("Name: python\nCapEff:\t0000000000000000\n")  # a container's user
    assert env.lockable_bytes() == 8 * 2**20
    monkeypatch.setattr(resource, "getrlimit", lambda what: (resource.RLIM_INFINITY,) * 2)
    assert env.lockable_bytes() is None


def test_save_steps_zero_means_no_resume_point_and_no_checkpoint_disk(model_dir, tmp_path):
    # Trainer saves a resume point at the last step whatever save_steps says; a run that asks for
    # none (the memory-scale runs: 1.6 GB of checkpoint against 7 steps to redo) must get none.
    from offloadbench.memory.predict import predicted_disk_bytes
    from offloadbench.resolve import resolve_spec
    from offloadbench.training.trainer import training_arguments

    spec = spec_for("zero3_offload_cpu", model_dir, save_steps=0)
    assert training_arguments(spec, tmp_path, "cpu", "fp32", None).save_strategy == "no"
    assert training_arguments(spec_for("full", model_dir), tmp_path, "cpu", "fp32", None).save_strategy == "steps"
    from offloadbench.memory.counting import load_model_config

    disk = predicted_disk_bytes(resolve_spec(spec), load_model_config(str(model_dir)), 64, "cpu")
    assert disk["resume_checkpoints_at_peak"] == 0 and disk["total"] == disk["final_model"]


def test_the_sampler_counts_a_childs_own_memory_found_without_scanning_every_process():
    import subprocess
    import sys
    import time

    import psutil

    from offloadbench.training.procfs import child_pids, children_uss

    code = "import time; x = bytearray(64 * 2**20); x[::4096] = b'1' * len(x[::4096]); print(1, flush=True)"
    code += "; time.sleep(30)"
    kid = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        kid.stdout.readline()  # its 64 MiB are touched
        assert kid.pid in child_pids()
        assert children_uss(psutil.Process()) > 60 * 2**20
    finally:
        kid.kill()
        kid.wait()
    time.sleep(0.1)
    assert kid.pid not in child_pids()
