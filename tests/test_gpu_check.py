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
    assert ds[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    assert ds[6:8] == ["-m", "offloadbench.train"]
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
