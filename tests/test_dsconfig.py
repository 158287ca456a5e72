"""DeepSpeed configs as authors bring them: keys checked against the installed DeepSpeed, every
"auto" filled as Hugging Face Trainer fills it, and settings that contradict the run refused.

The catalogue in tests/deepspeed_configs/ is retyped from public configs (origins below); the
broken_* files are ours. Every test here is fast: no model, no training, one DeepSpeed import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import REPO

from offloadbench import dsconfig
from offloadbench.config import load_config
from offloadbench.dsconfig import DeepSpeedConfigError
from offloadbench.errors import PreflightError
from offloadbench.spec import run_spec

CATALOGUE = REPO / "tests" / "deepspeed_configs"
HIDDEN_SIZES = (128, 4096)
# The three numbers Trainer derives from the hidden size, written out (not recomputed) for both sizes:
# reduce_bucket_size = h*h, stage3_prefetch_bucket_size = int(0.9*h*h), stage3_param_persistence_threshold = 10*h.
HIDDEN = {
    128: {
        "reduce_bucket_size": 16384,
        "stage3_prefetch_bucket_size": 14745,
        "stage3_param_persistence_threshold": 1280,
    },
    4096: {
        "reduce_bucket_size": 16777216,
        "stage3_prefetch_bucket_size": 15099494,
        "stage3_param_persistence_threshold": 40960,
    },
}

# file -> (where it comes from, None if it passes check_keys, else [(key, words the message must hold)]).
# Retyped verbatim unless the origin says "written from".
REFUSED_OR_NOT = {
    "llamafactory_ds_z3_offload_config.json": (
        "hiyouga/LLaMA-Factory examples/deepspeed/ds_z3_offload_config.json",
        [("comms_config", "ignores it"), ("monitor_config", "ignores it")],
    ),
    "llamafactory_ds_z3_config.json": (
        "hiyouga/LLaMA-Factory examples/deepspeed/ds_z3_config.json",
        [("comms_config", "ignores it"), ("monitor_config", "ignores it")],
    ),
    "axolotl_zero3_bf16_cpuoffload_all.json": (
        "axolotl-ai-cloud/axolotl deepspeed_configs/zero3_bf16_cpuoffload_all.json (short aliases max_live_parameters, "
        "max_reuse_distance, gather_16bit_weights_on_model_save)",
        None,
    ),
    "axolotl_zero3_bf16.json": (
        'axolotl-ai-cloud/axolotl deepspeed_configs/zero3_bf16.json: "auto" under the short aliases, which Trainer '
        "does not fill",
        [
            ("zero_optimization.prefetch_bucket_size", "zero_optimization.stage3_prefetch_bucket_size"),
            ("zero_optimization.param_persistence_threshold", "zero_optimization.stage3_param_persistence_threshold"),
        ],
    ),
    "transformers_docs_zero3_offload_cpu.json": (
        "written from the transformers DeepSpeed guide (docs/source/en/deepspeed.md): its ZeRO-3 zero_optimization "
        'block (offload to cpu) with the fp16/bf16/optimizer/scheduler "auto" blocks and top-level keys of its '
        "ZeRO-3/Infinity example",
        None,
    ),
    "transformers_docs_zero3_nvme.json": (
        "transformers docs/source/en/deepspeed.md, NVMe configuration (ZeRO-3/Infinity example): aio inside "
        "zero_optimization, with thread_count",
        [("zero_optimization.aio", "DeepSpeed reads it as aio"), ("zero_optimization.aio.thread_count", "intra_op")],
    ),
    "peft_docs_zero3_qlora_accelerate.json": (
        "written from the PEFT guide docs/source/accelerate/deepspeed.md (QLoRA + ZeRO-3): the deepspeed_config: "
        "block of its accelerate YAML as JSON; every key is accelerate's",
        [
            ("deepspeed_multinode_launcher", "accelerate"),
            ("offload_optimizer_device", "zero_optimization.offload_optimizer.device"),
            ("offload_param_device", "zero_optimization.offload_param.device"),
            ("zero3_init_flag", "deepspeed.zero.Init"),
            ("zero3_save_16bit_model", "zero_optimization.stage3_gather_16bit_weights_on_model_save"),
            ("zero_stage", "zero_optimization.stage"),
        ],
    ),
    "deepspeed_docs_zero_infinity_nvme.json": (
        "written from DeepSpeed's docs (docs/_pages/config-json.md offload_param / offload_optimizer NVMe keys, and "
        "the aio block of its AIO_FORMAT before intra_op_parallelism replaced thread_count)",
        [("aio.thread_count", "aio.intra_op_parallelism")],
    ),
    "broken_misspelled.json": (
        "ours: misspellings",
        [
            ("gradient_cliping", "gradient_clipping"),
            ("zero_optimization.stage3_prefetch_bucket_sise", "zero_optimization.stage3_prefetch_bucket_size"),
            ("zero_optimization.offload_param.pin_memroy", "zero_optimization.offload_param.pin_memory"),
        ],
    ),
    "broken_outdated.json": (
        "ours: outdated keys",
        [
            ("bfloat16", "bf16"),
            ("zero_optimization.cpu_offload", 'zero_optimization.offload_optimizer = {"device": "cpu"}'),
            ("zero_optimization.cpu_offload_params", "zero_optimization.offload_param"),
            (
                "zero_optimization.stage3_gather_fp16_weights_on_model_save",
                "zero_optimization.stage3_gather_16bit_weights_on_model_save",
            ),
            ("aio.thread_count", "aio.intra_op_parallelism"),
        ],
    ),
    "broken_wrong_level.json": (
        "ours: keys at the wrong level",
        [
            ("stage3_max_live_parameters", "zero_optimization.stage3_max_live_parameters"),
            ("offload_optimizer", "zero_optimization.offload_optimizer"),
            ("zero_optimization.pin_memory", "zero_optimization.offload_param.pin_memory"),
        ],
    ),
    "broken_removed.json": (
        'ours: a removed block (the transformers docs\' Apex amp block) and an "auto" nobody fills',
        [("amp", "removed"), ("zero_optimization.stage3_max_live_parameters", "1000000000")],
    ),
}
RESOLVES = [name for name, (_, refused) in REFUSED_OR_NOT.items() if refused is None]
OURS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))


def training(**overrides) -> dict:
    return {**load_config()["training"], **overrides}


def test_every_catalogue_file_is_described():
    assert sorted(p.name for p in CATALOGUE.glob("*.json")) == sorted(REFUSED_OR_NOT)


@pytest.mark.parametrize("name", [n for n, (_, refused) in REFUSED_OR_NOT.items() if refused])
def test_refused_configs_name_the_file_each_key_and_the_fix(name):
    path = CATALOGUE / name
    with pytest.raises(DeepSpeedConfigError) as err:
        dsconfig.check_keys(dsconfig.read(path), path)
    message = str(err.value)
    assert str(path) in message
    lines = {line.strip().split(": ", 1)[0]: line for line in message.splitlines()[1:]}
    expected = REFUSED_OR_NOT[name][1]
    assert sorted(lines) == sorted(key for key, _ in expected), message  # exactly these keys, no others
    for key, words in expected:
        assert words in lines[key], lines[key]


@pytest.mark.parametrize("name", RESOLVES)
def test_accepted_configs_resolve_every_auto_to_the_trainer_formulas(name):
    ds = dsconfig.read(CATALOGUE / name)
    dsconfig.check_keys(ds, CATALOGUE / name)
    tr = training()
    for h in HIDDEN_SIZES:
        out = dsconfig.resolve_auto(ds, hidden_size=h, training=tr, world_size=2, dtype="bf16")
        assert '"auto"' not in json.dumps(out)
        zero = out["zero_optimization"]
        for key, value in HIDDEN[h].items():
            assert zero[key] == value == dsconfig.hidden_size_values(h)[f"zero_optimization.{key}"]
        assert out["train_micro_batch_size_per_gpu"] == tr["micro_batch_size"]
        assert out["gradient_accumulation_steps"] == tr["gradient_accumulation_steps"]
        assert out["train_batch_size"] == tr["micro_batch_size"] * tr["gradient_accumulation_steps"] * 2
        assert out["gradient_clipping"] == tr["max_grad_norm"]
        assert out["bf16"]["enabled"] is True
        dsconfig.validate(dsconfig.resolve_auto(ds, hidden_size=h, training=tr, world_size=1, dtype="bf16"), name)


def _transformers_fill(ds: dict, tr: dict, world_size: int, dtype: str, hidden_size: int) -> dict:
    """What transformers' own HfTrainerDeepSpeedConfig makes of ``ds`` for this run, with the
    TrainingArguments train.training_args builds (Trainer's defaults for what the spec does not set)."""
    import dataclasses

    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    args = SimpleNamespace(
        world_size=world_size,
        per_device_train_batch_size=tr["micro_batch_size"],
        gradient_accumulation_steps=tr["gradient_accumulation_steps"],
        max_grad_norm=tr["max_grad_norm"],
        learning_rate=tr["learning_rate"],
        weight_decay=tr["weight_decay"],
        warmup_steps=tr["warmup_steps"],
        adam_beta1=defaults["adam_beta1"],
        adam_beta2=defaults["adam_beta2"],
        adam_epsilon=defaults["adam_epsilon"],
        save_on_each_node=defaults["save_on_each_node"],
        fp16=dtype == "fp16",
        bf16=dtype == "bf16",
        fp16_full_eval=defaults["fp16_full_eval"],
        bf16_full_eval=defaults["bf16_full_eval"],
    )
    args.get_warmup_steps = lambda n: TrainingArguments.get_warmup_steps(args, n)
    hf = HfTrainerDeepSpeedConfig(ds)
    try:
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(
            args, SimpleNamespace(config=SimpleNamespace(hidden_size=hidden_size)), tr["max_steps"]
        )
    finally:
        unset_hf_deepspeed_config()
    return hf.config


@pytest.mark.parametrize(
    "name",
    [
        *RESOLVES,
        "llamafactory_ds_z3_offload_config.json",
        "llamafactory_ds_z3_config.json",
        "transformers_docs_zero3_nvme.json",
    ],
)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_resolve_auto_fills_what_transformers_fills(name, dtype):
    """The same config through transformers' HfTrainerDeepSpeedConfig and through resolve_auto; where
    transformers refuses a value that contradicts the run, check_against_run refuses the same keys."""
    import re

    ds = dsconfig.read(CATALOGUE / name)
    for h, tr in ((128, training(warmup_steps=0)), (4096, training())):  # warmup_num_steps = max(1, 0) too
        try:
            theirs = _transformers_fill(ds, tr, 2, dtype, h)
        except ValueError as err:
            keys = re.findall(r"- ds (\S+)=", str(err))
            assert keys, err
            message = refused(ds, {**spec(), "training": tr, "world_size": 2}, dtype=dtype)
            assert all(f"{key}=" in message for key in keys), (keys, message)
            continue
        ours = dsconfig.resolve_auto(ds, hidden_size=h, training=tr, world_size=2, dtype=dtype)
        assert ours == theirs


def test_every_key_resolve_auto_fills_is_one_transformers_fills():
    """A config with "auto" at every key of TRAINER_AUTO but accelerate's: transformers fills the same."""
    ds: dict = {}
    for dotted in dsconfig.TRAINER_AUTO:
        if dotted != dsconfig.ACCELERATE_GATHER:
            *parents, last = dotted.split(".")
            node = ds
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = "auto"
    ds["zero_optimization"]["stage"] = 3
    for dtype in ("fp32", "bf16", "fp16"):
        for h in HIDDEN_SIZES:
            tr = training()
            theirs = _transformers_fill(ds, tr, 4, dtype, h)
            assert '"auto"' not in json.dumps(theirs)
            assert dsconfig.resolve_auto(ds, hidden_size=h, training=tr, world_size=4, dtype=dtype) == theirs


def test_resolve_auto_fills_offloadbench_keys_and_refuses_what_it_cannot_fill(tmp_path):
    ds = dsconfig.read(REPO / "configs" / "deepspeed" / "zero3_offload_nvme.json")
    kw = {"hidden_size": 64, "training": training(), "world_size": 1, "dtype": "fp32"}
    out = dsconfig.resolve_auto(ds, **kw, largest_tensor=32768, nvme_dir=tmp_path / "swap")
    assert out["zero_optimization"]["offload_param"]["buffer_size"] == 32768
    for section in ("offload_param", "offload_optimizer"):
        assert out["zero_optimization"][section]["nvme_path"] == str((tmp_path / "swap").resolve())
    assert '"auto"' not in json.dumps(out)
    with pytest.raises(DeepSpeedConfigError, match="buffer_size.*largest"):
        dsconfig.resolve_auto(ds, **kw, nvme_dir=tmp_path)
    with pytest.raises(DeepSpeedConfigError, match="nvme_path.*nvme_dir"):
        dsconfig.resolve_auto(ds, **kw, largest_tensor=1)
    hidden = {"zero_optimization": {"stage": 3, "reduce_bucket_size": "auto"}}
    with pytest.raises(DeepSpeedConfigError, match="reduce_bucket_size.*hidden_size"):
        dsconfig.resolve_auto(hidden, **{**kw, "hidden_size": None})
    dsconfig.resolve_auto(ds, **{**kw, "hidden_size": None}, largest_tensor=1, nvme_dir=tmp_path)  # none needed


def test_a_misspelling_is_refused_and_an_alias_is_accepted():
    """Both halves: a check that accepted everything, or refused the short names, fails here."""
    dsconfig.check_keys({"zero_optimization": {"stage": 3, "max_live_parameters": 0}}, "alias.json")
    dsconfig.check_keys({"zero_optimization": {"stage": 3, "stage3_max_live_parameters": 0}}, "long.json")
    with pytest.raises(DeepSpeedConfigError, match=r"max_live_parameter: unknown key; did you mean .*live_parameters"):
        dsconfig.check_keys({"zero_optimization": {"stage": 3, "max_live_parameter": 0}}, "typo.json")
    with pytest.raises(DeepSpeedConfigError, match="set twice"):
        dsconfig.check_keys({"zero_optimization": {"max_live_parameters": 0, "stage3_max_live_parameters": 0}}, "x")
    with pytest.raises(DeepSpeedConfigError, match="gradient_clipping"):
        dsconfig.check_keys({"gradient_clippping": 1.0}, "top.json")  # DeepSpeed itself would ignore this one


@pytest.mark.parametrize("path", OURS, ids=lambda p: p.name)
def test_our_configs_pass_and_match_their_runs(path, tmp_path):
    ds = dsconfig.read(path)
    dsconfig.check_keys(ds, path)
    config = load_config()
    runs = [r for r in config["runs"] if r.get("deepspeed") and Path(r["deepspeed"]).name == path.name]
    assert runs, f"no run of configs/config.yaml uses {path.name}"
    for run in runs:
        spec = {
            **run_spec(config, run["name"]),
            "nvme_dir": str(tmp_path / "nvme") if run.get("nvme_dir") else None,
        }
        dsconfig.check_against_run(ds, spec, path, dtype="fp32", device="cpu")  # bf16/fp16 "auto" on CPU
        dsconfig.check_against_run(ds, spec, path, dtype="bf16", device="cuda")
        out = dsconfig.resolve_auto(
            ds,
            hidden_size=64,
            training=spec["training"],
            world_size=1,
            dtype="fp32",
            largest_tensor=1 << 20,
            nvme_dir=spec["nvme_dir"],
        )
        dsconfig.validate(out, path)


def test_schema_is_read_from_deepspeed():
    from deepspeed.runtime.swap_tensor.aio_config import AIO_DEFAULT_DICT
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadParamConfig

    s = dsconfig.schema()
    for key in (
        "train_batch_size", "gradient_clipping", "bf16", "fp16", "optimizer", "scheduler", "steps_per_print",
        "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "wall_clock_breakdown",
        "communication_data_type", "aio", "activation_checkpointing", "flops_profiler", "tensorboard",
    ):  # fmt: skip
        assert key in s.top and not s.top[key].deprecated and not s.top[key].removed, key
    zero = s.top["zero_optimization"].children
    for name, f in DeepSpeedZeroConfig.model_fields.items():
        assert zero[name] is zero[f.alias or name]
        assert zero[name].name == (f.alias or name)
    assert set(s.top["zero_optimization"].children["offload_param"].children) == set(
        DeepSpeedZeroOffloadParamConfig.model_fields
    )
    assert {k for k, v in s.top["aio"].children.items() if not v.deprecated} == set(AIO_DEFAULT_DICT)
    assert "comms_config" not in s.top and "monitor_config" not in s.top


@pytest.mark.parametrize(
    "section, model, loc",
    [
        ("zero_optimization", "DeepSpeedZeroConfig", ()),
        ("bf16", "DeepSpeedBF16Config", ()),
        ("fp16", "DeepSpeedFP16Config", ()),
        ("comms_logger", "CommsLoggerConfig", ()),
        ("csv_monitor", "DeepSpeedMonitorConfig", ("csv_monitor",)),
    ],
)
def test_each_section_is_parsed_by_the_model_its_keys_come_from(section, model, loc):
    """DeepSpeed's parser itself refuses an unknown key in the section with the model the schema used."""
    from deepspeed.runtime.config import DeepSpeedConfig
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        DeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, section: {"not_a_key": 1}})
    assert err.value.title == model
    assert tuple(err.value.errors()[0]["loc"]) == (*loc, "not_a_key")
    assert "not_a_key" not in dsconfig.schema().top[section].children


def test_normalise_and_get_read_every_spelling_with_deepspeed_defaults():
    from offloadbench.memory.zero import DS_DEFAULTS

    ds = dsconfig.read(CATALOGUE / "axolotl_zero3_bf16_cpuoffload_all.json")
    zero = dsconfig.normalise(ds)["zero_optimization"]
    assert zero["stage3_max_live_parameters"] == 0 and "max_live_parameters" not in zero
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    assert dsconfig.get(ds, "zero_optimization.max_live_parameters") == 0
    assert dsconfig.get(ds, "zero_optimization.stage3_max_reuse_distance") == 0
    lf = dsconfig.normalise(dsconfig.read(CATALOGUE / "llamafactory_ds_z3_config.json"))
    assert lf["zero_optimization"]["stage3_max_live_parameters"] == 1_000_000_000  # 1e9 -> int
    assert isinstance(lf["zero_optimization"]["sub_group_size"], int)
    # memory.DS_DEFAULTS, kept by hand, agrees with DeepSpeed's own defaults
    for key, name in {
        "zero_optimization.reduce_bucket_size": "reduce_bucket_size",
        "zero_optimization.sub_group_size": "sub_group_size",
        "zero_optimization.offload_param.buffer_count": "param_buffer_count",
        "zero_optimization.offload_param.buffer_size": "param_buffer_size",
        "zero_optimization.offload_param.max_in_cpu": "max_in_cpu",
        "zero_optimization.offload_optimizer.buffer_count": "optimizer_buffer_count",
        "aio.block_size": "aio_block_size",
    }.items():
        assert dsconfig.get({}, key) == DS_DEFAULTS[name], key
    with pytest.raises(KeyError):
        dsconfig.get({}, "zero_optimization.no_such_key")


def spec(name: str = "zero3_offload_cpu", **training_overrides) -> dict:
    s = run_spec(load_config(), name)
    return {**s, "training": {**s["training"], **training_overrides}}


def refused(ds: dict, sp: dict, *, dtype: str | None = "fp32", device: str | None = "cpu") -> str:
    with pytest.raises(DeepSpeedConfigError) as err:
        dsconfig.check_against_run(ds, sp, "x.json", dtype=dtype, device=device)
    return str(err.value)


def test_batch_keys_that_contradict_the_run_are_refused():
    """The tutorial's train_batch_size 16 beside micro-batch 1 x accumulation 8 (config.check_deepspeed_config's
    message, moved here)."""
    sp = spec(micro_batch_size=1, gradient_accumulation_steps=8)
    ds = dsconfig.read(sp["deepspeed"])
    dsconfig.check_against_run(ds, sp, sp["deepspeed"], dtype="fp32")
    assert "sets train_batch_size=16, but the run trains with train_batch_size=8" in refused(
        {**ds, "train_batch_size": 16}, sp
    )
    dsconfig.check_against_run({**ds, "train_batch_size": 8}, sp, "x.json", dtype="fp32")
    assert "no gradient_accumulation_steps, so accelerate sets it to 1" in refused(
        {k: v for k, v in ds.items() if k != "gradient_accumulation_steps"}, sp
    )
    assert "no gradient_clipping" in refused({k: v for k, v in ds.items() if k != "gradient_clipping"}, sp)
    message = refused({**ds, "optimizer": {"type": "AdamW", "params": {"lr": 3e-5, "betas": "auto"}}}, sp)
    assert "optimizer.params.lr=3e-05" in message and "training.learning_rate" in message


def test_precision_follows_the_run():
    ax = dsconfig.read(CATALOGUE / "axolotl_zero3_bf16_cpuoffload_all.json")
    message = refused(ax, spec())  # bf16.enabled true, but on this CPU the run trains in fp32
    assert "bf16.enabled=true, but the run trains in fp32" in message and "without CUDA" in message
    dsconfig.check_against_run(ax, spec(), "ax.json", dtype="bf16", device="cuda")
    assert "bf16.enabled=true" in refused(ax, spec(dtype="fp32"), dtype=None, device=None)  # explicit fp32
    dsconfig.check_against_run(ax, spec(), "ax.json", dtype=None)  # dtype auto, hardware unknown: not judged
    ours = dsconfig.read(spec()["deepspeed"])
    assert "fp16.enabled=true" in refused({**ours, "fp16": {"enabled": True}}, spec())
    no_bf16 = {k: v for k, v in ours.items() if k != "bf16"}
    assert 'add "bf16": {"enabled": "auto"}' in refused(no_bf16, spec(), dtype="bf16", device="cuda")


def test_optimizer_and_scheduler_blocks_that_replace_the_run_are_refused():
    ours = dsconfig.read(spec()["deepspeed"])
    for kind in ("AdamW", "adamw", "Adam"):
        dsconfig.check_against_run({**ours, "optimizer": {"type": kind, "params": {}}}, spec(), "x.json")
    assert "optimizer.type=Lamb" in refused({**ours, "optimizer": {"type": "Lamb"}}, spec())
    assert "adam_w_mode false" in refused(
        {**ours, "optimizer": {"type": "Adam", "params": {"adam_w_mode": False}}}, spec()
    )
    assert "max_grad_norm" in refused({**ours, "optimizer": {"type": "AdamW", "params": {"max_grad_norm": 1}}}, spec())
    docs = dsconfig.read(CATALOGUE / "transformers_docs_zero3_offload_cpu.json")
    assert "scheduler block" in refused(docs, spec()) and "training.lr_scheduler=cosine" in refused(docs, spec())
    dsconfig.check_against_run({k: v for k, v in docs.items() if k != "scheduler"}, spec(), "docs.json")


def test_llamafactory_configs_without_their_ignored_blocks():
    """Once the two blocks DeepSpeed ignores are gone, ds_z3 passes; ds_z3_offload still has no optimizer
    block, so Trainer's torch AdamW meets offload_optimizer, which DeepSpeed refuses."""
    for name in ("llamafactory_ds_z3_config.json", "llamafactory_ds_z3_offload_config.json"):
        ds = {k: v for k, v in dsconfig.read(CATALOGUE / name).items() if k not in ("comms_config", "monitor_config")}
        dsconfig.check_keys(ds, name)
        for h in HIDDEN_SIZES:
            out = dsconfig.resolve_auto(ds, hidden_size=h, training=training(), world_size=1, dtype="fp32")
            assert {k: out["zero_optimization"][k] for k in HIDDEN[h]} == HIDDEN[h]
            dsconfig.validate(out, name)
        if "offload" in name:
            assert "zero_force_ds_cpu_optimizer" in refused(ds, spec())
            dsconfig.check_against_run({**ds, "zero_force_ds_cpu_optimizer": False}, spec(), name)
        else:
            dsconfig.check_against_run(ds, spec("zero3"), name, dtype="fp32", device="cpu")


def test_offload_targets_must_suit_the_run(tmp_path):
    nvme = spec("zero3_offload_nvme")
    ds = dsconfig.read(nvme["deepspeed"])
    assert "set nvme_dir in the run" in refused(ds, {**nvme, "nvme_dir": None})
    dsconfig.check_against_run(ds, {**nvme, "nvme_dir": str(tmp_path / "swap")}, "x.json")
    stage2 = {**ds, "zero_optimization": {**ds["zero_optimization"], "stage": 2}}
    assert "parameter offload needs ZeRO stage 3" in refused(stage2, {**nvme, "nvme_dir": str(tmp_path)})
    assert "owns the optimizer" in refused(dsconfig.read(spec()["deepspeed"]), spec(optimizer="paged_adamw_8bit"))


def test_read_names_the_file(tmp_path):
    with pytest.raises(DeepSpeedConfigError, match="missing.json does not exist"):
        dsconfig.read(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"zero_optimization": {"stage": 3,}}')
    with pytest.raises(DeepSpeedConfigError, match="bad.json is not valid JSON"):
        dsconfig.read(tmp_path / "bad.json")
    (tmp_path / "twice.json").write_text('{"zero_optimization": {"stage": 3, "stage": 2}}')
    with pytest.raises(DeepSpeedConfigError, match="twice.json sets stage twice"):
        dsconfig.read(tmp_path / "twice.json")


def test_validate_runs_deepspeeds_own_parser():
    with pytest.raises(DeepSpeedConfigError, match="(?s)refuses bad.json.*reduce_bucket_size"):
        dsconfig.validate(
            {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"reduce_bucket_size": 0}}, "bad.json"
        )


def test_importing_the_module_imports_no_deepspeed():
    code = "import sys, offloadbench.dsconfig; print(sorted({'deepspeed', 'torch', 'transformers'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]"


def test_the_sub_modules_import_one_way():
    """Each sub-module imports only those before it in order, at the top of the module, and nothing else of
    offloadbench (config imports dsconfig, not the reverse)."""
    import ast

    order = ["errors", "io", "keytree", "auto", "keys", "run"]
    package = REPO / "src" / "offloadbench" / "dsconfig"
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*order, "__init__"])
    for i, name in enumerate(order):
        tree = ast.parse((package / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node in tree.body, f"{name}.py imports .{node.module} inside a function"
                where = "." * node.level + (node.module or "")
                assert node.level == 1 and node.module in order[:i], f"{name}.py imports {where}"


def test_an_nvme_dir_that_cannot_be_written_is_refused(tmp_path):
    """check_writable lives here (check_against_run uses it; config wraps the error in PreflightError):
    DeepSpeedConfigError by default, or the error class given."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    nvme = spec("zero3_offload_nvme")
    ds = dsconfig.read(nvme["deepspeed"])
    with pytest.raises(DeepSpeedConfigError, match=r"nvme_dir: .*a_file/swap is not writable \(.*a_file is not a"):
        dsconfig.check_against_run(ds, {**nvme, "nvme_dir": str(blocker / "swap")}, "x.json")
    dsconfig.check_writable(tmp_path / "new" / "swap", "nvme_dir")  # a folder that can be created
    with pytest.raises(PreflightError, match="a_file/swap is not writable"):
        dsconfig.check_writable(blocker / "swap", "nvme_dir", PreflightError)
