"""The configuration is validated before any job: schema, cross-key checks, clear messages."""

from __future__ import annotations

import pytest
import yaml
from conftest import REPO, TINY, snakemake

from offloadbench.config import load_config
from offloadbench.errors import ConfigError
from offloadbench.spec import run_spec

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
    "warm-up as long as the run": ({"training": {"warmup_steps": 40}}, ["training.warmup_steps", "max_steps"]),
    "nodes do not divide the processes": (
        {"runs": [{"name": "a", "method": "full", "world_size": 3, "num_nodes": 2}], "baseline_run": "a"},
        ["world_size", "num_nodes=2"],
    ),
    "nvme folder for a run that offloads nothing to nvme": (  # would be silently ignored
        {"runs": [{"name": "a", "method": "full", "nvme_dir": "results/nvme/a"}], "baseline_run": "a"},
        ["runs[0] (a).nvme_dir", "offloads nothing to NVMe"],
    ),
    "evaluation smaller than one batch": (
        {"training": {"eval_max_blocks": 2}},
        ["training.eval_max_blocks", "micro_batch_size=4"],
    ),
    "hub model without a pinned revision": (
        {"model": {"source": "hub", "hub": {"id": "meta-llama/Llama-3.1-8B"}}},
        ["model.hub", "revision"],
    ),
    "claims file missing": ({"claims": "configs/no-claims.yaml"}, ["claims file", "no-claims.yaml", "does not exist"]),
}


def _files_case(tmp_path, name: str) -> dict:
    """Cases that need a file on disk: the override refers to files written under tmp_path."""
    if name == "empty corpus":
        (tmp_path / "train.txt").write_text("")
        (tmp_path / "valid.txt").write_text("some text\n")
        files = {"format": "text", "train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "valid.txt")}
        return {"dataset": {"source": "files", "files": files}}
    if name == "model folder without weights":
        model = tmp_path / "my-model"
        model.mkdir()
        (model / "config.json").write_text("{}")
        (model / "pytorch_model.bin").write_bytes(b"pickle")  # never loaded: pickles can run code
        return {"model": {"source": "hub", "hub": {"id": str(model), "revision": "main"}}}
    if name.startswith("deepspeed"):
        ds = tmp_path / "ds.json"
        if name == "deepspeed config that is not JSON":
            ds.write_text('{"zero_optimization": {"stage": 3,}}')
        elif name == "deepspeed parameter offload below stage 3":
            ds.write_text('{"zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}')
        else:  # contradicting batch keys
            ds.write_text('{"train_batch_size": 16, "zero_optimization": {"stage": 3}}')
        return {"runs": [{"name": "z", "method": "full", "deepspeed": str(ds)}], "baseline_run": "z"}
    claims = tmp_path / "claims.yaml"
    if name == "claim with an unknown check":
        claims.write_text("claims:\n  - {id: C1, statement: s, check: at_least, run: a, against: [b]}\n")
    elif name == "claim on a metric the summary lacks":
        text = "{id: C1, statement: s, check: at_most, run: a, against: [b], metrics: [tokens_per_sec], factor: 1}"
        claims.write_text(f"claims:\n  - {text}\n")
    return {"claims": str(claims)}


FILE_CASES = {
    "empty corpus": ["dataset.files.train", "train.txt", "is empty"],
    "model folder without weights": ["model.hub.id", "my-model", "safetensors", "pytorch_model.bin"],
    "deepspeed config that is not JSON": ["run z", "ds.json", "not valid JSON", "line 1"],
    "deepspeed parameter offload below stage 3": ["run z", "ds.json", "offload_param", "stage 3"],
    "deepspeed batch keys contradict the run": ["run z", "train_batch_size=16", "train_batch_size=8", '"auto"'],
    "claim with an unknown check": ["claims file", "claims.0", "at_least"],
    "claim on a metric the summary lacks": ["claims file", "C1", "tokens_per_sec", "tokens_per_s"],
}


def test_the_bad_input_catalogue_has_at_least_30_cases():
    assert len(BAD) + len(FILE_CASES) + len(SWEEP_BAD) >= 30


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_bad_input_file_is_rejected_naming_the_file(case, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(overrides=_files_case(tmp_path, case))
    for word in FILE_CASES[case]:
        assert word in str(err.value), f"{case}: {word!r} not in {err.value}"


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


SWEEP = {
    "model": {"sizes": {"wide": {"hidden_size": 192, "intermediate_size": 384, "num_attention_heads": 6}}},
    "sweep": {"runs": ["full", "qlora_offload"], "model_sizes": ["base", "wide"], "block_sizes": [64, 128]},
}


def test_sweep_expands_into_runs_with_their_own_model_and_data():
    config = load_config(overrides=SWEEP)
    names = [r["name"] for r in config["runs"]]
    assert len(names) == len(load_config()["runs"]) + 2 * 2 * 2 and "qlora_offload.wide.b64" in names
    spec = run_spec(config, "qlora_offload.wide.b64")
    assert spec["model"]["path"] == "results/models/tiny-llama-wide" and spec["model_size"] == "wide"
    assert spec["dataset"] == "pydoc-topics-b64" and spec["block_size"] == 64
    assert spec["deepspeed"] == run_spec(config, "qlora_offload")["deepspeed"]  # the template's settings
    base = run_spec(config, "full.base.b128")
    assert base["model"] == run_spec(config, "full")["model"] and base["dataset"] == "pydoc-topics"
    from offloadbench.spec import declared_runs

    own_runs = names[: len(load_config()["runs"])]
    assert declared_runs(config) == own_runs, "claims compare the profile's own runs, not the sweep's points"
    own = load_config(
        overrides={"runs": [{"name": "short", "method": "full", "block_size": 64}], "baseline_run": "short"}
    )
    assert declared_runs(own) == ["short"], "a run that sets block_size itself is still one of the profile's runs"
    nvme = load_config(overrides={**SWEEP, "sweep": {**SWEEP["sweep"], "runs": ["zero3_offload_nvme"]}})
    dirs = [r.get("nvme_dir") for r in nvme["runs"] if r["name"].startswith("zero3_offload_nvme")]
    assert len(set(dirs)) == len(dirs) == 5, "every sweep point needs its own swap folder"


SWEEP_BAD = {
    "sweep over a run that does not exist": ({"sweep": {"runs": ["nope"]}}, ["sweep.runs", "nope"]),
    "sweep over an undefined model size": ({"sweep": {"model_sizes": ["huge"]}}, ["sweep.model_sizes", "huge"]),
    "model size that changes the tokenizer": (
        {"model": {"sizes": {"wide": {"vocab_size": 8192}}}},
        ["model.sizes.wide", "vocab_size"],
    ),
    "sweep block above a size's context": (
        {"sweep": {"block_sizes": [512]}},
        ["block_size", "512", "max_position_embeddings=256"],
    ),
    "model size whose heads do not divide its width": (
        {"model": {"sizes": {"wide": {"hidden_size": 320, "num_attention_heads": 6}}}},
        ["model.sizes.wide.hidden_size", "num_attention_heads"],
    ),
}


@pytest.mark.parametrize("case", sorted(SWEEP_BAD))
def test_bad_sweep_is_rejected_naming_the_key(case):
    override, words = SWEEP_BAD[case]
    with pytest.raises(ConfigError) as err:
        load_config(overrides={**SWEEP, **override, "sweep": {**SWEEP["sweep"], **override.get("sweep", {})}})
    for word in words:
        assert word in str(err.value), f"{case}: {word!r} not in {err.value}"


def test_seed_repeats_expand_into_runs_that_differ_only_by_the_seed():
    from offloadbench.spec import declared_runs, repeats_of

    default = load_config()
    own = [r for r in default["runs"] if "repeat_of" not in r]
    runs = [{**r, "seeds": 3} if r["name"] == "zero3_offload_nvme" else r for r in own]
    config = load_config(overrides={"runs": runs})
    assert repeats_of(config) == {
        "lora": ["lora", "lora.s2", "lora.s3"],
        "zero3_offload_nvme": ["zero3_offload_nvme", "zero3_offload_nvme.s2", "zero3_offload_nvme.s3"],
    }
    base, third = run_spec(config, "lora"), run_spec(config, "lora.s3")
    assert third["seed"] == config["seed"] + 2 and third["repeat_of"] == "lora" and "repeat_of" not in base
    same = {k: v for k, v in third.items() if k not in ("run", "seed", "repeat_of")}
    assert same == {k: v for k, v in base.items() if k not in ("run", "seed")}, "only the seed differs"
    assert "lora.s2" in declared_runs(config), "claims judge every seed"
    dirs = [run_spec(config, r)["nvme_dir"] for r in repeats_of(config)["zero3_offload_nvme"]]
    assert len(set(dirs)) == 3, "every repeat needs its own swap folder"
    assert repeats_of(default) == {"lora": ["lora", "lora.s2", "lora.s3"]}, "the default profile's 3 seeds"
    # A profile with its own runs has only the repeats it asks for.
    own = load_config(overrides={"runs": [{"name": "short", "method": "full"}], "baseline_run": "short"})
    assert repeats_of(own) == {} and [r["name"] for r in own["runs"]] == ["short"]


@pytest.mark.parametrize(
    "run, words",
    [
        ({"seeds": 0}, ["runs", "seeds"]),
        ({"seeds": 3, "seed": 7}, ["runs", "seed"]),
        ({"seeds": 3, "repeat_of": "lora"}, ["runs", "repeat_of"]),
    ],
)
def test_bad_seed_repeats_are_rejected_naming_the_key(run, words):
    with pytest.raises(ConfigError) as err:
        load_config(overrides={"runs": [{"name": "short", "method": "full", **run}], "baseline_run": "short"})
    for word in words:
        assert word in str(err.value), (word, str(err.value))
