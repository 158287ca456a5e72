"""benchmarks/gpu_check.py and benchmarks/gpu_wheels.sh, as far as a machine without a GPU can check
them: the no-CUDA exit, the command line, the specs it runs (the project's own, valid against its
schema and checks) and the launch commands, the loss criterion, and the wheel list."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO

from offloadbench.config import check_config, check_run, schema_errors
from offloadbench.spec import config_spec, run_spec

SCRIPT = REPO / "benchmarks" / "gpu_check.py"
WHEELS = REPO / "benchmarks" / "gpu_wheels.sh"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_without_cuda_it_exits_2_and_says_why(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA GPU" in proc.stderr and "--gpus all" in proc.stderr
    assert not out.exists(), "nothing is reported as checked"
    assert proc.stdout == ""


def test_help_shows_how_to_run_it():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for text in ("--out", "--allow-cpu", "gpu_wheels.sh", "python3 -m pip install", "docker run --gpus all"):
        assert text in proc.stdout, text


@pytest.mark.parametrize("size", ["gpu", "tiny"])
def test_its_config_is_valid_for_the_project(gpu_check, tmp_path, size, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = gpu_check.gpu_check_config(gpu_check.size_for(size == "gpu"), tmp_path / "nvme")
    assert schema_errors(config) == []
    check_config(config, root=tmp_path)
    names = [r["name"] for r in config["runs"]]
    assert names == list(gpu_check.RUNS)
    scratch = config["model"]["scratch"]
    assert scratch["hidden_size"] % 64 == 0 and scratch["intermediate_size"] % 64 == 0, "4-bit needs multiples of 64"


def test_it_runs_the_paths_the_issue_names(gpu_check, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = gpu_check.gpu_check_config(gpu_check.size_for(True), tmp_path / "nvme")
    specs = {name: run_spec(config, name) for name in gpu_check.RUNS}
    for name, spec in specs.items():
        check_run(spec, name)
        assert spec["training"]["dtype"] == "auto", "bf16 only where torch.cuda.is_bf16_supported()"
    assert specs["qlora_paged"]["method"] == "qlora"
    assert specs["qlora_paged"]["training"]["optimizer"] == "paged_adamw_32bit"
    assert specs["qlora_paged"]["quantization"]["quant_type"] == "nf4"
    cpu = json.loads(Path(specs["zero3_offload_cpu"]["deepspeed"]).read_text())["zero_optimization"]
    assert cpu["stage"] == 3 and cpu["offload_optimizer"]["device"] == cpu["offload_param"]["device"] == "cpu"
    nvme = json.loads(Path(specs["zero3_offload_nvme"]["deepspeed"]).read_text())
    assert nvme["zero_optimization"]["offload_param"]["device"] == "nvme" and "aio" in nvme
    assert specs["zero3_offload_nvme"]["nvme_dir"].startswith(str(tmp_path / "nvme"))
    assert specs["qlora_zero3_offload"]["method"] == "qlora" and specs["qlora_zero3_offload"]["deepspeed"]


def test_jobs_are_launched_like_the_train_rule(gpu_check, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = gpu_check.gpu_check_config(gpu_check.size_for(True), tmp_path / "nvme")
    model = Path(run_spec(config, "qlora_paged")["model"]["path"])  # the config the resolve step reads
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps({"model_type": "llama", **config["model"]["scratch"]}))
    plain = gpu_check.train_command(run_spec(config, "qlora_paged"), tmp_path / "data", tmp_path / "out")
    assert plain[:3] == [sys.executable, "-m", "offloadbench.train"]
    ds = gpu_check.train_command(run_spec(config, "zero3_offload_cpu"), tmp_path / "data", tmp_path / "out")
    assert ds[:3] == [sys.executable, "-m", "offloadbench.train"], "one DeepSpeed process: plain python too"
    spec = json.loads(ds[ds.index("--spec") + 1])
    assert config_spec(spec) == run_spec(config, "zero3_offload_cpu"), "the run's spec, resolved"
    assert (
        spec["deepspeed_config"]["train_batch_size"]
        == spec["training"]["micro_batch_size"] * spec["training"]["gradient_accumulation_steps"]
    )
    env = gpu_check.subprocess_env()
    assert env["PYTHONPATH"].split(":")[0] == str(REPO / "src")


def test_loss_criterion(gpu_check):
    module = gpu_check
    assert module.loss_decreases([6.0, 5.9, 5.8, 5.5, 5.4, 5.3])[0]
    assert not module.loss_decreases([6.0, 6.1, 6.0, 6.2, 6.3, 6.4])[0]
    assert not module.loss_decreases([6.0])[0]
    assert not module.loss_decreases([5.0, 5.0, 5.0, 5.0])[0], "flat is not decreasing"


def test_table_has_the_issue_columns(gpu_check):
    rows = [
        {"check": "qlora_paged", "status": "ok", "seconds": 12.3, "gpu_peak_bytes": 2**30, "nvml_peak_bytes": 3 * 2**30}
    ]
    text = gpu_check.table(rows + [{"check": "nvml", "status": "skip", "seconds": None, "notes": "no CUDA"}])
    header = text.splitlines()[0].split()
    assert header[:2] == ["check", "status"] and "seconds" in header and "notes" in header
    assert "peak GPU GiB" in text.splitlines()[0] and "NVML GiB" in text.splitlines()[0]
    assert re.search(r"qlora_paged\s+ok\s+12\.3\s+1\.00\s+3\.00", text)


def test_wheel_bundle_takes_the_locked_versions():
    text = WHEELS.read_text()
    assert subprocess.run(["bash", "-n", str(WHEELS)]).returncode == 0
    names = re.search(r"LOCKED=\(([^)]*)\)", text).group(1).split()
    lock = {
        line.split("==")[0].lower() for line in (REPO / "requirements.lock").read_text().splitlines() if "==" in line
    }
    assert {"bitsandbytes", "datasets"} <= set(names)
    assert all(n.lower() in lock for n in names), [n for n in names if n.lower() not in lock]
    assert "grep '^deepspeed==' requirements.lock" in text, "deepspeed's wheel is built from the locked sdist"
    assert "64 * 1024 * 1024" in text, "the bundle is checked against the 64 MiB that travels"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".gpu-wheels/x.whl"], cwd=REPO)
    assert ignored.returncode == 0, ".gpu-wheels/ is ignored by git"


# -- pass criteria: pure functions of summary.json and the memory model, each broken once -------


def observed(params="none", optimizer="none", zero_class=None, four_bit=0, paged=0, activations="none"):
    """summary.json's observed, as observe.observed writes it."""
    zero = None
    if zero_class is not None:
        zero = {"stage": 3, "params": params, "optimizer": optimizer, "optimizer_class": zero_class}
    return {
        "offload": {"params": params, "optimizer": "paged" if paged else optimizer, "activations": activations},
        "notes": {},
        "optimizer": {"class": "x", "paged_requested": bool(paged), "state_bytes": paged, "paged_state_bytes": paged},
        "zero": zero,
        "four_bit": {"count": four_bit, "storage_dtypes": ["bfloat16"] if four_bit else []},
        "activation_bytes_to_host": 10 if activations == "cpu" else 0,
    }


CPU_ADAM = "deepspeed.ops.adam.cpu_adam.DeepSpeedCPUAdam"
GOOD = {
    "qlora_paged": observed(four_bit=56, paged=4096),
    "qlora_zero3_offload": observed("cpu", "cpu", CPU_ADAM, four_bit=56, activations="cpu"),
    "zero3_offload_cpu": observed("cpu", "cpu", CPU_ADAM),
    "zero3_offload_nvme": observed("nvme", "nvme", CPU_ADAM),
}


def test_observed_placement_passes_as_configured_and_fails_where_offload_fell_back(gpu_check):
    for name, obs in GOOD.items():
        assert gpu_check.placement_problems(name, {"observed": obs}, cuda=True) == [], name
    fell_back = {"observed": observed("none", "none", "torch.optim.adamw.AdamW", four_bit=56, activations="cpu")}
    assert "fell back" in " ".join(gpu_check.placement_problems("qlora_zero3_offload", fell_back, cuda=True))
    no_engine = {"observed": observed(four_bit=56, activations="cpu")}
    assert "no ZeRO-3 engine" in " ".join(gpu_check.placement_problems("qlora_zero3_offload", no_engine, cuda=True))
    torch_adam = {"observed": observed("cpu", "cpu", "torch.optim.adamw.AdamW")}
    assert "not DeepSpeedCPUAdam" in " ".join(gpu_check.placement_problems("zero3_offload_cpu", torch_adam, cuda=True))
    cpu_only = {"observed": observed("cpu", "cpu", CPU_ADAM)}
    assert "expected nvme/nvme" in " ".join(gpu_check.placement_problems("zero3_offload_nvme", cpu_only, cuda=True))
    no_4bit = {"observed": observed("cpu", "cpu", CPU_ADAM, four_bit=0, activations="cpu")}
    assert "no 4-bit base weight" in " ".join(gpu_check.placement_problems("qlora_zero3_offload", no_4bit, cuda=True))
    assert gpu_check.placement_problems("qlora_paged", {"observed": observed(four_bit=0, paged=4096)}, cuda=True)
    # paged state and activation copies are CUDA-only criteria: skipped by the CPU harness
    unpaged = {"observed": observed(four_bit=56)}
    assert "no paged optimizer state" in " ".join(gpu_check.placement_problems("qlora_paged", unpaged, cuda=True))
    assert gpu_check.placement_problems("qlora_paged", unpaged, cuda=False) == []
    no_copy = {"observed": observed("cpu", "cpu", CPU_ADAM, four_bit=56)}
    assert "copied nothing" in " ".join(gpu_check.placement_problems("qlora_zero3_offload", no_copy, cuda=True))
    assert gpu_check.placement_problems("qlora_zero3_offload", no_copy, cuda=False) == []
    assert gpu_check.placement_problems("zero3_offload_cpu", {}, cuda=False), "a summary without observed fails"


def test_nvme_bytes_written_must_match_the_memory_model(gpu_check):
    pred = {"nvme_written": {"total": 2_000_000}, "ranks_per_node": 2}  # 1 MB per rank
    assert gpu_check.nvme_problems({"nvme_bytes_written": 1_050_000}, pred) == []
    assert gpu_check.nvme_problems({"nvme_bytes_written": 1_200_000}, pred)
    assert gpu_check.nvme_problems({"nvme_bytes_written": 0}, pred), "nothing written: NVMe offload fell back"
    assert gpu_check.nvme_problems({"nvme_bytes_written": None}, pred)
    assert gpu_check.nvme_problems({"nvme_bytes_written": 0}, {"nvme_written": {"total": 0}})


@pytest.fixture(scope="module")
def gpu_predictions(gpu_check, tmp_path_factory):
    """The memory model's GPU peaks for the check's offload runs and for the same runs without
    offload, for the check's own (GPU-size) model."""
    from offloadbench.memory.predict import predict

    root = tmp_path_factory.mktemp("gpu-check")
    config = gpu_check.gpu_check_config(gpu_check.size_for(True), root / "nvme")
    model_config = {"model_type": "llama", **config["model"]["scratch"]}
    out = {}
    for name in ("qlora_zero3_offload", "zero3_offload_cpu", "zero3_offload_nvme"):
        spec = run_spec(config, name)
        out[name] = (
            spec,
            model_config,
            predict(spec, model_config, spec["block_size"], "cuda"),
            predict(gpu_check.without_offload(spec), model_config, spec["block_size"], "cuda"),
        )
    return out


def test_an_offload_run_must_hold_less_gpu_memory_than_without_offload(gpu_check, gpu_predictions):
    for name, (spec, _, offloaded, plain) in gpu_predictions.items():
        off, full = offloaded["predicted"]["gpu"]["total"], plain["predicted"]["gpu"]["total"]
        assert off < full, f"{name}: the memory model must predict a saving for the criterion to mean anything"
        assert "zero3.json" in gpu_check.without_offload(spec)["deepspeed"]
        assert gpu_check.peak_problems({"gpu_allocated_peak_bytes": int(off * 1.1)}, offloaded, plain) == [], name
        # offload fell back: the run holds what it would without offload
        fell_back = gpu_check.peak_problems({"gpu_allocated_peak_bytes": full}, offloaded, plain)
        assert "offload did not take effect" in " ".join(fell_back), name
        assert gpu_check.peak_problems({"gpu_allocated_peak_bytes": None}, offloaded, plain)
    same = gpu_predictions["zero3_offload_cpu"][2]
    assert "no saving" in " ".join(gpu_check.peak_problems({"gpu_allocated_peak_bytes": 1}, same, same))


def test_run_problems_applies_the_criteria_of_each_run(gpu_check, gpu_predictions):
    spec, model_config, offloaded, _ = gpu_predictions["zero3_offload_nvme"]
    per_rank = offloaded["nvme_written"]["total"] // offloaded["ranks_per_node"]
    summary = {
        "observed": GOOD["zero3_offload_nvme"],
        "nvme_bytes_written": per_rank,
        "gpu_allocated_peak_bytes": offloaded["predicted"]["gpu"]["total"],
    }
    assert gpu_check.run_problems("zero3_offload_nvme", spec, summary, model_config, cuda=True) == []
    # a CPU harness run skips the GPU peak criterion (nothing is on an accelerator), not the others
    from offloadbench.memory.predict import predict

    on_cpu = predict(spec, model_config, spec["block_size"], "cpu")
    cpu_summary = {**summary, "nvme_bytes_written": on_cpu["nvme_written"]["total"], "gpu_allocated_peak_bytes": None}
    assert gpu_check.run_problems("zero3_offload_nvme", spec, cpu_summary, model_config, cuda=False) == []
    broken = {**summary, "nvme_bytes_written": 0, "gpu_allocated_peak_bytes": 10 * 2**40}
    problems = gpu_check.run_problems("zero3_offload_nvme", spec, broken, model_config, cuda=True)
    assert len(problems) == 2, problems


def test_nvml_must_read_the_card_torch_uses(gpu_check):
    good = {
        "gpu_allocated_peak_bytes": 3 * 2**30,
        "gpu_reserved_peak_bytes": 4 * 2**30,
        "gpu_nvml_used_peak_bytes": 5 * 2**30,
    }
    assert gpu_check.nvml_problems("r", good) == []
    # another card, busy with other work: far more than torch's reserved memory plus the context
    wrong_busy = {**good, "gpu_nvml_used_peak_bytes": 40 * 2**30}
    assert "another card" in " ".join(gpu_check.nvml_problems("r", wrong_busy))
    # another card, idle: less than torch's own peak
    wrong_idle = {**good, "gpu_nvml_used_peak_bytes": 2**29}
    assert "< torch peak" in " ".join(gpu_check.nvml_problems("r", wrong_idle))
    assert gpu_check.nvml_problems("r", {**good, "gpu_nvml_used_peak_bytes": None})
