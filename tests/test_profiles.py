"""The cluster profiles in workflow/profiles/: every key is one that Snakemake or the installed
executor plugin knows, each dry-runs the default (CPU, accelerator none) and the paper (GPU)
profile with the resources each training run needs, and the sbatch calls the Slurm plugin builds
from them ask Slurm for the right GPUs or CPUs, nodes and tasks (a stand-in sbatch records them;
nothing is submitted). tools/slurm_test.sh (make slurm-test) runs the profile on a real Slurm."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import BIN, REPO, snakemake

from offloadbench.config import load_config
from offloadbench.spec import base_eval_spec, run_spec

PROFILES = REPO / "workflow" / "profiles"
PAPER = REPO / "configs" / "paper.yaml"
PLUGINS = {
    "slurm": ["snakemake_executor_plugin_slurm", "snakemake_executor_plugin_slurm_jobstep"],
    "kubernetes": ["snakemake_executor_plugin_kubernetes"],
}
# Resources Snakemake itself defines (the plugins read them too).
CORE_RESOURCES = {"mem_mb", "mem", "disk_mb", "disk", "runtime", "tmpdir"}
# Resources the training rules set per run (workflow/rules/train.smk), as the Slurm plugin reads them.
RULE_RESOURCES = {"gpu", "nodes", "gres", "tasks", "tasks_per_gpu", "mpi", "cpus_per_gpu", "cpus_per_task"}


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def plugin_resources(name: str) -> set[str]:
    """Every resource name the plugin's own source reads from a job."""
    found = set()
    for module in PLUGINS[name]:
        for path in Path(importlib.util.find_spec(module).origin).parent.glob("*.py"):
            text = path.read_text()
            found |= set(re.findall(r"resources(?:_dict)?\.get\(\s*[\"'](\w+)[\"']", text))
            found |= set(re.findall(r"job\.resources\.(\w+)", text))
            found |= set(re.findall(r"[\"'](\w+)[\"']\s+in\s+(?:job\.)?resources", text))
    return found - {"get", "keys", "items"}


def rule_names() -> set[str]:
    return {
        m
        for smk in (REPO / "workflow" / "rules").glob("*.smk")
        for m in re.findall(r"^rule (\w+):", smk.read_text(), re.M)
    }


def test_only_the_jobs_that_use_every_core_go_to_the_queue():
    """Every rule is a localrule (seconds: docs/cluster.md has the measurement) except the ones that
    run offloadbench.train on every core or on training.cpu_threads (all_cores(), train_threads,
    eval_threads): pretraining, training and evaluation."""
    block = re.search(r"^localrules:\n((?:    \w+,\n)+)", (REPO / "Snakefile").read_text(), re.M)
    local = set(re.findall(r"\w+", block[1]))
    heavy = {
        name
        for smk in (REPO / "workflow" / "rules").glob("*.smk")
        for name, body in re.findall(r"^rule (\w+):\n((?:(?:    .*)?\n)+)", smk.read_text(), re.M)
        if re.search(r"threads: (all_cores\(\)|train_threads|eval_threads)$", body, re.M)
    }
    assert heavy == {"pretrain", "train", "evaluate_base"}
    assert local == (rule_names() | {"all"}) - heavy


def jobs(output: str) -> list[dict]:
    """The jobs of a dry run's log: rule, wildcards, threads and resources of each."""
    out: list[dict] = []
    for line in output.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):$", line):
            out.append({"rule": m[1], "resources": {}})
        elif out and (m := re.match(r"\s+(wildcards|threads|resources): (.*)$", line)):
            if m[1] == "threads":
                out[-1]["threads"] = int(m[2])
            else:
                pairs = (item.split("=", 1) for item in m[2].split(", "))
                out[-1][m[1]] = {k: int(v) if v.isdigit() else v for k, v in pairs}
    return out


def dry_run(workdir: Path, profile_dir: Path, *args: str) -> list[dict]:
    proc = snakemake(workdir, "-n", "--profile", str(profile_dir), *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return jobs(proc.stdout + proc.stderr)


def train_jobs(found: list[dict]) -> dict[str, dict]:
    return {j["wildcards"]["run"]: j["resources"] for j in found if j["rule"] == "train"}


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_every_profile_key_is_a_snakemake_or_plugin_setting(name):
    """No invented keys: options are in Snakemake's own parser (plugin settings included), resources
    are read by Snakemake or by the plugin's source, rules exist."""
    from snakemake.cli import get_argument_parser

    options = set(get_argument_parser()._option_string_actions)
    prof = profile(name)
    assert prof["executor"] == name
    unknown = [key for key in prof if f"--{key}" not in options]
    assert not unknown, f"{name} profile keys that Snakemake does not know: {unknown}"
    known = CORE_RESOURCES | plugin_resources(name)
    used = set(prof.get("default-resources", {}))
    for rule, resources in prof.get("set-resources", {}).items():
        assert rule in rule_names(), f"set-resources for a rule that does not exist: {rule}"
        used |= set(resources)
    assert used <= known, f"resources the {name} plugin does not read: {sorted(used - known)}"
    if name == "slurm":
        assert RULE_RESOURCES <= known, sorted(RULE_RESOURCES - known)
    else:
        assert "gpu" in known


@pytest.mark.parametrize("configfile", [None, PAPER], ids=["default", "paper"])
def test_slurm_profile_dry_runs_with_gpus_or_cpus_memory_and_time_per_training_run(tmp_path, configfile):
    """The default profile (accelerator none) asks for CPUs only, the paper (gpu) for a GPU per run."""
    args = ["--configfile", str(configfile)] if configfile else []
    found = dry_run(tmp_path, PROFILES / "slurm", *args)
    config = load_config(*([configfile] if configfile else []))
    runs = train_jobs(found)
    assert sorted(runs) == sorted(r["name"] for r in config["runs"])
    evaluate = next(j["resources"] for j in found if j["rule"] == "evaluate_base")
    for run, res in [*runs.items(), ("evaluate_base", evaluate)]:
        assert res["nodes"] == 1, run
        assert not {"gres", "tasks", "mpi"} & set(res), f"{run} runs on one machine"
        if config["accelerator"] == "gpu":
            assert res["gpu"] == 1 and res["cpus_per_gpu"] == 8 and "cpus_per_task" not in res, run
        else:
            # the profile's cores where cpu_threads is null (the memory-scale runs), else cpu_threads
            spec = base_eval_spec(config) if run == "evaluate_base" else run_spec(config, run)
            want = 8 if spec["training"]["cpu_threads"] is None else spec["training"]["cpu_threads"]
            assert "gpu" not in res and res["cpus_per_task"] == want, f"{run}: its CPUs, no GPU"
    if not configfile:
        per_job = {res["cpus_per_task"] for res in runs.values()}
        assert per_job == {1, 8}, "both kinds of job are in the default profile"
    assert config["accelerator"] == ("gpu" if configfile else "none")
    assert all(r["mem_mb"] == 256000 and r["runtime"] == 240 for r in runs.values())
    assert evaluate["mem_mb"] == 64000
    assert all(j["resources"]["runtime"] >= 60 for j in found)


@pytest.mark.parametrize("accelerator", ["gpu", "none"])
def test_multi_process_runs_ask_for_their_gpus_or_cpus_nodes_and_tasks(tmp_path, accelerator):
    config = write_scale_config(tmp_path, accelerator)
    found = train_jobs(dry_run(tmp_path, PROFILES / "slurm", "--configfile", str(config)))
    two = found["nodes2"]
    assert "gpu" not in two, "--gpus counts over all nodes; gres is per node"
    assert (two["nodes"], two["tasks"], two["mpi"]) == (2, 2, "srun")
    assert found["ws2"]["nodes"] == 1
    if accelerator == "gpu":
        assert found["ws2"]["gpu"] == 2
        assert (two["gres"], two["tasks_per_gpu"]) == ("gpu:4", 0)
    else:
        assert "gpu" not in found["ws2"] and found["ws2"]["cpus_per_task"] == 8
        assert not {"gres", "tasks_per_gpu"} & set(two) and two["cpus_per_task"] == 8


def test_local_runs_are_not_held_back_by_gpu_resources(tmp_path):
    """Without --resources gpu=N nothing limits GPU jobs locally; with it, a job asking for more GPUs
    than there are is cut down to what there is instead of waiting for ever."""
    config = str(write_scale_config(tmp_path, "gpu"))
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--configfile", config)
    found = train_jobs(jobs(proc.stdout + proc.stderr))
    assert found["ws2"]["gpu"] == 2
    proc = snakemake(tmp_path, "-n", "--cores", "2", "--resources", "gpu=1", "--configfile", config)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert train_jobs(jobs(proc.stdout + proc.stderr))["ws2"]["gpu"] == 1


K8S_STORAGE = ("default-storage-provider", "default-storage-prefix")


@pytest.mark.parametrize("configfile", [None, PAPER], ids=["default", "paper"])
def test_kubernetes_profile_dry_runs_with_gpus_and_memory_per_training_run(tmp_path, configfile):
    """Everything but the executor and its object store: with them a dry run needs the storage
    plugin (snakemake-storage-plugin-s3, not in the lock), credentials and the bucket, since the
    outputs it checks live there."""
    prof = profile("kubernetes")
    assert set(K8S_STORAGE) <= set(prof)
    local = {k: v for k, v in prof.items() if k not in ("executor", *K8S_STORAGE)}
    copy = tmp_path / "profile"
    copy.mkdir()
    (copy / "config.yaml").write_text(yaml.safe_dump(local))
    args = ["--configfile", str(configfile)] if configfile else []
    found = dry_run(tmp_path / "work", copy, *args)
    runs = train_jobs(found)
    assert runs and all(r["gpu_manufacturer"] == "nvidia" and r["mem_mb"] == 256000 for r in runs.values())
    gpus = {r.get("gpu") for r in runs.values()}
    assert gpus == ({1} if configfile else {None}), "a GPU per run for the paper, none for the CPU profile"


def write_scale_config(tmp_path: Path, accelerator: str) -> Path:
    path = tmp_path / f"scale-{accelerator}.yaml"
    ds = "configs/deepspeed/zero3_offload_cpu.json"
    runs = [
        {"name": "ws1", "method": "full", "deepspeed": ds},
        {"name": "ws2", "method": "full", "deepspeed": ds, "world_size": 2},
        {"name": "nodes2", "method": "full", "deepspeed": ds, "world_size": 8, "num_nodes": 2},
    ]
    # every core of a node per job (cpu_threads null), as a multi-node run would be given
    training = {"cpu_threads": None}
    config = {"accelerator": accelerator, "baseline_run": "ws1", "training": training, "runs": runs}
    path.write_text(yaml.safe_dump(config))
    return path


FAKE_SBATCH = """#!/bin/sh
n=$(( $(cat "$FAKE_SLURM/count" 2>/dev/null || echo 100) + 1 )); echo $n > "$FAKE_SLURM/count"
printf '%s\\n' "$*" >> "$FAKE_SLURM/sbatch.log"
echo $n
"""
# Status queries (sacct --parsable2) find every job failed; the account guess finds none.
FAKE_SACCT = """#!/bin/sh
case "$*" in *--parsable2*) for i in $(seq 101 $(cat "$FAKE_SLURM/count")); do echo "$i|FAILED"; done;; esac
"""
FAKE_SINFO = "#!/bin/sh\necho PARTITION\necho 'gpu*'\n"
# The profile's status command (squeue, no accounting database needed) finds them failed too; the
# plugin uses it when scontrol reports a MinJobAge that keeps finished jobs long enough.
FAKE_SQUEUE = """#!/bin/sh
for i in $(seq 101 $(cat "$FAKE_SLURM/count")); do echo "$i|FAILED"; done
"""
FAKE_SCONTROL = "#!/bin/sh\necho 'MinJobAge               = 300 sec'\n"


@pytest.mark.slow
@pytest.mark.parametrize("accelerator", ["gpu", "none"])
def test_slurm_submissions_ask_for_gpus_or_cpus_nodes_and_tasks(tmp_path, accelerator):
    """A real (not dry) run with the profile against stand-in sbatch/sacct/sinfo: the plugin's own
    sbatch options for one GPU, two GPUs, and two nodes x four GPUs; on a CPU cluster (accelerator
    none) CPUs per task, nodes and tasks, and no GPU or gres anywhere."""
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    fakes = {
        "sbatch": FAKE_SBATCH,
        "sacct": FAKE_SACCT,
        "sinfo": FAKE_SINFO,
        "squeue": FAKE_SQUEUE,
        "scontrol": FAKE_SCONTROL,
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for inputs in ("results/data/pydoc-topics", "results/models/tiny-llama"):  # only the training jobs run
        (work / inputs).mkdir(parents=True)
    # ... and, locally (localrules), the resolve jobs, which read the model's config.
    scratch = load_config()["model"]["scratch"]
    (work / "results/models/tiny-llama/config.json").write_text(json.dumps({"model_type": "llama", **scratch}))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM": str(tmp_path),
    }
    targets = [f"results/runs/{run}/summary.json" for run in ("ws1", "ws2", "nodes2")]
    cmd = [str(BIN / "snakemake"), *targets, "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    cmd += ["--profile", str(PROFILES / "slurm"), "--slurm-init-seconds-before-status-checks", "1"]
    cmd += ["--configfile", str(write_scale_config(tmp_path, accelerator))]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "SLURM status is: 'FAILED'" in proc.stderr, proc.stderr[-3000:]
    calls = {}
    for line in (tmp_path / "sbatch.log").read_text().splitlines():
        opts = line.split(" --wrap=")[0]
        calls[re.search(r"--comment rule_train_wildcards_(\w+)", opts)[1]] = opts.split()
        assert "--cores 8 " in line, "the profile's cores reach the job"
    assert sorted(calls) == ["nodes2", "ws1", "ws2"]
    if accelerator == "none":
        for run in ("ws1", "ws2"):
            assert {"--nodes=1", "--ntasks=1", "--cpus-per-task=8", "256000", "240"} <= set(calls[run]), calls[run]
        assert {"--nodes=2", "--ntasks=2", "--cpus-per-task=8"} <= set(calls["nodes2"]), calls["nodes2"]
        for opts in calls.values():
            assert not any(o.startswith(("--gpus", "--gres", "--cpus-per-gpu", "--ntasks-per-gpu")) for o in opts), opts
        return
    for run, gpus in (("ws1", 1), ("ws2", 2)):
        assert {"--nodes=1", f"--gpus={gpus}", "--cpus-per-gpu=8", "256000", "240"} <= set(calls[run]), calls[run]
        assert not any(o.startswith(("--ntasks", "--gres")) for o in calls[run]), calls[run]
    two = calls["nodes2"]
    assert {"--nodes=2", "--ntasks=2", "--gres=gpu:4", "--cpus-per-gpu=8"} <= set(two), two
    assert not any(o.startswith(("--gpus", "--ntasks-per-gpu")) for o in two), two
