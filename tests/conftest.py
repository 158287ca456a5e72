"""Shared fixtures: the repository, schema validation, and one run of the workflow on the tiny
profile (tests/configs/tiny.yaml) that the end-to-end tests read."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"
TINY = REPO / "tests" / "configs" / "tiny.yaml"
BIN = Path(sys.executable).parent


def validate(obj, schema_name: str) -> None:
    schema = json.loads((SCHEMAS / schema_name).read_text())
    jsonschema.Draft202012Validator(schema).validate(obj)


# A two-layer Llama for in-process tests (the tokenizer is trained on a few pydoc topics).
SCRATCH = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


# The memory model's tests (tests/test_memory*.py). A two-layer Llama (the shapes of SCRATCH):
# head_dim 64 / 4 = 16, k and v 2 heads x 16 = 32 wide (grouped-query attention), untied lm_head.
TWO = {**SCRATCH, "tie_word_embeddings": False}
EMBED = 512 * 64  # 32 768, and lm_head the same
ATTN = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64  # q, k, v, o: 12 288
MLP = 3 * 64 * 128  # gate, up, down: 24 576
LAYER = ATTN + MLP + 2 * 64  # + two RMSNorms: 36 992
N_TWO = EMBED + 2 * LAYER + 64 + EMBED  # + final norm + lm_head: 139 584
LORA_TWO = 2 * (8 * (64 + 64) + 8 * (64 + 32))  # r=8 on q_proj and v_proj, two layers: 3 584


@pytest.fixture(scope="module")
def config():
    """The default profile (configs/config.yaml)."""
    from offloadbench.config import load_config

    return load_config()


@pytest.fixture(scope="module")
def tiny(config):
    """The default profile's model config (the tiny Llama every default run trains)."""
    return {**config["model"]["scratch"], "tie_word_embeddings": False}


def spec_for(config, run: str, **training) -> dict:
    """A run's spec from ``config`` with some training settings changed (a copy)."""
    from offloadbench.spec import run_spec

    spec = copy.deepcopy(run_spec(config, run))
    spec["training"].update(training)
    return spec


def small_tokenizer():
    from offloadbench import corpora
    from offloadbench.model import train_tokenizer

    return train_tokenizer(list(corpora.load("pydoc").values())[:20], SCRATCH["vocab_size"])


# A fake secret in the environment of the tiny workflow: no output may ever contain it.
FAKE_TOKEN = "hf_offloadbenchFAKEtokenDoNotLeak0123456789"


def snakemake(workdir: Path, *args: str, timeout: int = 1200, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the workflow of this repository with its working directory elsewhere."""
    env = {**os.environ, **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


CANARY = "the user's file: must survive\n"
# Folders of the user's that the tiny workflow is pointed at, each holding a canary file: a
# results/ folder with the user's notes and reference, the NVMe run's nvme_dir, the HF cache.
CANARY_FOLDERS = ("results", "results/reference", "fast-disk", "hf-home")


def plant_canaries(workdir: Path) -> dict:
    """Canaries in every folder the tiny workflow is told to use; the config override that points
    the NVMe run at workdir/fast-disk, and the environment that points the HF cache at hf-home."""
    import yaml

    from offloadbench.config import load_config

    for folder in CANARY_FOLDERS:
        (workdir / folder).mkdir(parents=True, exist_ok=True)
        (workdir / folder / "canary.txt").write_text(CANARY)
    runs = [r for r in load_config(TINY)["runs"] if "repeat_of" not in r]  # repeats are generated
    for run in runs:
        if run.get("nvme_dir"):
            run["nvme_dir"] = str(workdir / "fast-disk")
    override = workdir / "canaries.yaml"
    override.write_text(yaml.safe_dump({"runs": runs}))
    return {"configfiles": tiny_configfiles(workdir), "env": {"HF_HOME": str(workdir / "hf-home")}}


def tiny_configfiles(workdir: Path) -> list[str]:
    """The --configfile arguments the tiny workflow ran with."""
    return [str(TINY), str(workdir / "canaries.yaml")]


def dead_canaries(workdir: Path) -> list[str]:
    return [f for f in CANARY_FOLDERS if not (workdir / f / "canary.txt").is_file()]


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> Path:
    """The whole tiny profile run once: data, base model, every run of configs/config.yaml, with
    a canary in every folder of the user's it is pointed at (test_owned checks they survive)."""
    workdir = tmp_path_factory.mktemp("tiny-workflow")
    planted = plant_canaries(workdir)
    proc = snakemake(
        workdir,
        "--cores",
        "2",
        "--configfile",
        *planted["configfiles"],
        env={"HF_TOKEN": FAKE_TOKEN, **planted["env"]},
    )
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("results/logs/*/*.log")))
        pytest.fail(f"tiny workflow failed:\n{proc.stderr[-5000:]}\n{logs}")
    return workdir


GIB = 2**30


def write_run(runs_dir, run, **overrides):
    """A synthetic run folder: summary.json (a LoRA run on a GPU unless overridden) and metrics."""
    summary = {
        "run": run,
        "method": "lora",
        "offload": "none",
        "dtype": "bf16",
        "device": "cuda",
        "status": "ok",
        "params_total": 8_030_000_000,
        "params_trainable": 3_407_872,
        "gpu_allocated_peak_bytes": 18 * GIB,
        "gpu_reserved_peak_bytes": 20 * GIB,
        "gpu_nvml_used_peak_bytes": 21 * GIB,
        "host_rss_peak_bytes": 4 * GIB,
        "nvme_bytes_written": None,
        "tokens_per_s": 2000.0,
        "wall_s": 300.0,
        "train_loss_final": 1.9,
        "eval_loss": 2.0,
        "eval_ppl": 7.389,
        "checkpoint_bytes": 13 * 2**20,
    }
    summary.update(overrides)
    (runs_dir / run).mkdir(parents=True)
    (runs_dir / run / "summary.json").write_text(json.dumps(summary))
    # 20 logged steps: step times averaging 2 s, tokens/s within +-2% of the summary's (the spread a
    # speed claim is judged with); a run without tokens/s logs none.
    rate = summary.get("tokens_per_s")
    rows = [
        {
            "step": i,
            "step_time_s": 1.0 if i % 2 else 3.0,
            "tokens_per_s": rate * (1 + 0.02 * ((i * 7) % 5 - 2) / 2) if rate else None,
        }
        for i in range(1, 21)
    ]
    (runs_dir / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
