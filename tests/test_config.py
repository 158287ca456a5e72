"""The configuration is validated before any job: schema, cross-key checks, clear messages."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, TINY, snakemake

from offloadbench.config import ConfigError, load_config, run_spec

PAPER = REPO / "configs" / "paper.yaml"


def test_default_paper_and_test_profiles_validate():
    for profile in ((), (PAPER,), (TINY,)):
        config = load_config(*profile)
        assert config["runs"], profile


def test_every_default_config_key_is_commented():
    """Each key line of configs/config.yaml carries a comment (its meaning and unit); inside
    `runs`, each run's name line says what the run is and the keys are documented above."""
    uncommented, in_runs = [], False
    for n, line in enumerate((REPO / "configs" / "config.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        in_runs = in_runs or stripped.startswith("runs:")
        is_key = ":" in stripped.split("#")[0]
        exempt = in_runs and not stripped.startswith("- name")
        if is_key and "#" not in stripped and not exempt:
            uncommented.append(f"{n}: {line}")
    assert not uncommented, "keys without a comment:\n" + "\n".join(uncommented)


# Each case: an override merged onto configs/config.yaml, and words the error must contain.
BAD = {
    "misspelled key": ({"dataset": {"blok_size": 64}}, ["blok_size"]),
    "unknown top-level key": ({"learning_rate": 1e-3}, ["learning_rate", "unexpected"]),
    "wrong type": ({"dataset": {"block_size": "128"}}, ["dataset.block_size", "integer"]),
    "zero batch": ({"training": {"micro_batch_size": 0}}, ["training.micro_batch_size", "minimum"]),
    "negative learning rate": ({"training": {"learning_rate": -1.0}}, ["training.learning_rate"]),
    "unknown method": ({"runs": [{"name": "x", "method": "dora"}]}, ["runs.0.method", "dora"]),
    "unknown dtype": ({"training": {"dtype": "fp8"}}, ["training.dtype", "fp8"]),
    "unknown optimizer": ({"training": {"optimizer": "sgd"}}, ["training.optimizer"]),
    "block above context": ({"dataset": {"block_size": 512}}, ["dataset.block_size", "max_position_embeddings"]),
    "heads do not divide width": (
        {"model": {"scratch": {"num_attention_heads": 3}}},
        ["model.scratch.hidden_size", "num_attention_heads"],
    ),
    "4-bit needs multiples of 64": (
        {"model": {"scratch": {"intermediate_size": 352}}},
        ["model.scratch.intermediate_size", "64"],
    ),
    "duplicate run names": (
        {"runs": [{"name": "a", "method": "lora"}, {"name": "a", "method": "full"}], "baseline_run": "a"},
        ["runs", "unique", "a"],
    ),
    "baseline is not a run": ({"baseline_run": "nope"}, ["baseline_run", "nope"]),
    "run name with a slash": ({"runs": [{"name": "a/b", "method": "lora"}]}, ["runs.0.name"]),
    "hub source without hub block": ({"dataset": {"source": "hub"}}, ["dataset.hub"]),
    "dataset file missing": (
        {"dataset": {"source": "files", "files": {"format": "text", "train": "nope.txt", "validation": "v.txt"}}},
        ["dataset.files.train", "nope.txt"],
    ),
    "save interval beyond the run": ({"training": {"save_steps": 1000}}, ["save_steps", "max_steps"]),
    "unknown run key": ({"runs": [{"name": "a", "method": "lora", "offload": "cpu"}]}, ["runs.0", "offload"]),
    "empty target modules": ({"lora": {"target_modules": []}}, ["lora.target_modules"]),
    "deepspeed config missing": (
        {"runs": [{"name": "z", "method": "full", "deepspeed": "configs/deepspeed/zero4.json"}], "baseline_run": "z"},
        ["run z", "zero4.json", "does not exist"],
    ),
    "nvme offload without a folder": (
        {
            "runs": [{"name": "z", "method": "full", "deepspeed": "configs/deepspeed/zero3_offload_nvme.json"}],
            "baseline_run": "z",
        },
        ["run z", "nvme_dir"],
    ),
    "nvme folder not writable": (  # below a file: even root cannot create it
        {
            "runs": [
                {
                    "name": "z",
                    "method": "full",
                    "deepspeed": "configs/deepspeed/zero3_offload_nvme.json",
                    "nvme_dir": str(REPO / "README.md" / "swap"),
                }
            ],
            "baseline_run": "z",
        },
        ["run z", "nvme_dir", "README.md/swap", "not writable"],
    ),
    "unknown lr scheduler": ({"training": {"lr_scheduler": "onecycle"}}, ["training.lr_scheduler"]),
    "lora dropout above one": ({"lora": {"dropout": 1.5}}, ["lora.dropout"]),
    "unknown quantization type": ({"quantization": {"quant_type": "int3"}}, ["quantization.quant_type"]),
    "validation share of half": ({"dataset": {"validation_fraction": 0.5}}, ["dataset.validation_fraction"]),
    "zero world size": (
        {"runs": [{"name": "a", "method": "lora", "world_size": 0}], "baseline_run": "a"},
        ["runs.0.world_size"],
    ),
    "paged optimizer under deepspeed": (
        {
            "runs": [
                {
                    "name": "z",
                    "method": "qlora",
                    "deepspeed": "configs/deepspeed/zero3_offload_cpu.json",
                    "training": {"optimizer": "paged_adamw_8bit"},
                }
            ],
            "baseline_run": "z",
        },
        ["run z", "paged_adamw_8bit", "owns the optimizer"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_is_rejected_naming_the_key(case):
    override, words = BAD[case]
    with pytest.raises(ConfigError) as err:
        load_config(overrides=override)
    for word in words:
        assert word in str(err.value), f"{case}: {word!r} not in {err.value}"


def test_run_spec_merges_run_overrides_onto_defaults():
    config = load_config()
    spec = run_spec(config, "qlora_paged")
    assert spec["training"]["optimizer"] == "paged_adamw_32bit"
    assert spec["training"]["max_steps"] == config["training"]["max_steps"]
    assert spec["lora"] == config["lora"]
    assert run_spec(config, "zero3_offload_cpu")["deepspeed"].endswith("configs/deepspeed/zero3_offload_cpu.json")


def test_misspelled_key_stops_snakemake_before_any_job(tmp_path):
    profile = tmp_path / "typo.yaml"
    profile.write_text(yaml.safe_dump({"training": {"max_step": 3}}))
    proc = snakemake(tmp_path, "--cores", "1", "--configfile", str(profile))
    assert proc.returncode != 0
    assert "max_step" in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists(), "a job ran although the config was invalid"


def test_default_and_paper_profiles_dry_run_and_lint(tmp_path):
    for extra in ([], ["--configfile", str(PAPER)]):
        proc = snakemake(tmp_path, "-n", "--cores", "1", *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "train" in proc.stdout
    lint = snakemake(REPO, "--lint")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-3000:]
