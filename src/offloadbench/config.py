"""Configuration: schema validation, cross-key checks and the resolved spec of each job.

The Snakefile validates the merged config with Snakemake's own ``validate`` against
``workflow/schemas/config.schema.yaml`` and then calls :func:`check_config` for what a JSON schema
cannot say (unique run names, block size against context length, files that must exist, a
DeepSpeed config that must agree with the run). The scripts never read the YAML themselves: every
rule hands them a resolved JSON spec (:func:`run_spec`, :func:`data_spec`, ...), so a change of
config re-runs exactly the jobs whose spec changed (Snakemake's params rerun trigger).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from . import owned

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "workflow" / "schemas"
DEFAULT_CONFIG = REPO / "configs" / "config.yaml"


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what would be right."""


class PreflightError(ConfigError):
    """A run that cannot work, found by the training job before any training starts."""


def deep_merge(base: dict, override: dict) -> dict:
    """Merge like Snakemake's --configfile: dicts recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    with path.open() as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def schema_errors(config: dict) -> list[str]:
    """All schema violations, each as 'key.path: message' (empty when valid)."""
    import jsonschema
    from referencing import Registry, Resource

    schema = read_yaml(SCHEMA_DIR / "config.schema.yaml")
    registry = Registry().with_resource("urn:config", Resource.from_contents(schema))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = []
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        where = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        errors.append(f"{where}: {err.message}")
    return errors


def load_config(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Load configs/config.yaml, merge further profiles onto it, validate and check.

    This is what the Snakefile does, for tests and tools that run outside Snakemake.
    """
    config = read_yaml(DEFAULT_CONFIG)
    for path in paths:
        config = deep_merge(config, read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    errors = schema_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    config = expand_sweep(config)
    check_config(config)
    return config


def expand_sweep(config: dict) -> dict:
    """The config with `sweep` (runs x model sizes x block sizes) expanded into extra runs, named
    <run>.<size>.b<block>; each copies its template run and sets model_size and block_size."""
    sweep = config.get("sweep")
    if not sweep:
        return config
    templates = {r["name"]: r for r in config["runs"]}
    for name in sweep["runs"]:
        _need(name in templates, "sweep.runs", f"{name!r} is not a run; choose from {', '.join(templates)}")
    for size in sweep["model_sizes"]:
        _need(
            size == "base" or size in config["model"].get("sizes", {}),
            "sweep.model_sizes",
            f"{size!r} is not base or a label of model.sizes ({', '.join(config['model'].get('sizes', {})) or 'none'})",
        )
    extra = []
    for name in sweep["runs"]:
        for size in sweep["model_sizes"]:
            for block in sweep["block_sizes"]:
                run = {**copy.deepcopy(templates[name]), "name": f"{name}.{size}.b{block}"}
                run.update(
                    model_size=size, block_size=block, sweep_point=True
                )  # a marker the schema forbids in a config
                if run.get("nvme_dir"):  # swap files of concurrent points must not collide
                    run["nvme_dir"] = f"{run['nvme_dir']}.{size}.b{block}"
                extra.append(run)
    return {**config, "runs": config["runs"] + extra}


def declared_runs(config: dict) -> list[str]:
    """The profile's own runs, without the sweep's points (claims compare these with the base model)."""
    return [r["name"] for r in config["runs"] if not r.get("sweep_point")]


def scratch_config(config: dict, size: str = "base") -> dict:
    """model.scratch with the overrides of a model size (base = the profile's own model)."""
    return {**config["model"]["scratch"], **(config["model"].get("sizes", {}).get(size) or {})}


def model_name(config: dict, size: str = "base") -> str:
    return config["model"]["name"] if size == "base" else f"{config['model']['name']}-{size}"


def models(config: dict) -> dict[str, dict]:
    """Every scratch model the profile builds: name -> LlamaConfig fields (base first)."""
    if config["model"]["source"] != "scratch":
        return {}
    sizes = ["base", *sorted({r["model_size"] for r in config["runs"] if r.get("model_size", "base") != "base"})]
    return {model_name(config, size): scratch_config(config, size) for size in sizes}


def run_dataset(config: dict, run: dict) -> dict:
    """The fine-tuning data of a run: the profile's dataset, re-blocked if the run sets block_size."""
    ds = config["dataset"]
    block = run.get("block_size")
    if block is None or block == ds["block_size"]:
        return ds
    return {**ds, "name": f"{ds['name']}-b{block}", "block_size": block}


def _need(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key}: {message}")


def check_config(config: dict, root: str | Path = ".") -> None:
    """Cross-key checks a JSON schema cannot express. Raises ConfigError naming the key."""
    root = Path(root)
    model = config["model"]
    for key, ds in datasets(config).items():
        _need(ds["source"] != "hub" or "hub" in ds, f"{key}.hub", "required when source is hub")
        _need(ds["source"] != "files" or "files" in ds, f"{key}.files", "required when source is files")
        if ds["source"] == "files":
            for split in ("train", "validation"):
                path = root / ds["files"][split]
                _need(path.is_file(), f"{key}.files.{split}", f"file {path} does not exist")
                _need(path.stat().st_size > 0, f"{key}.files.{split}", f"file {path} is empty: no text to train on")
    names = [ds["name"] for ds in datasets(config).values()]
    _need(len(set(names)) == len(names), "model.pretrain.dataset.name", "must differ from dataset.name")
    _need(model["source"] != "hub" or "hub" in model, "model.hub", "required when model.source is hub")
    if model["source"] == "hub":
        check_local_model(root / model["hub"]["id"])
    if model["source"] == "scratch":
        _need("scratch" in model, "model.scratch", "required when model.source is scratch")
        qlora = any(r["method"] == "qlora" for r in config["runs"])
        check_scratch(model["scratch"], "model.scratch", qlora)
        for size, overrides in model.get("sizes", {}).items():
            _need("vocab_size" not in overrides, f"model.sizes.{size}.vocab_size", "every size shares the tokenizer")
            check_scratch(scratch_config(config, size), f"model.sizes.{size}", qlora)
        sc = model["scratch"]
        for key, ds in datasets(config).items():
            _need(
                ds["block_size"] <= sc["max_position_embeddings"],
                f"{key}.block_size",
                f"{ds['block_size']} exceeds the model's context "
                f"(model.scratch.max_position_embeddings={sc['max_position_embeddings']})",
            )
    for i, run in enumerate(config["runs"]):
        size = run.get("model_size", "base")
        _need(
            size == "base" or (model["source"] == "scratch" and size in model.get("sizes", {})),
            f"runs[{i}] ({run['name']}).model_size",
            f"{size!r} is not base or a label of model.sizes (scratch models only)",
        )
        if model["source"] == "scratch" and run.get("block_size"):
            ctx = scratch_config(config, size)["max_position_embeddings"]
            _need(
                run["block_size"] <= ctx,
                f"runs[{i}] ({run['name']}).block_size",
                f"{run['block_size']} exceeds the context of model size {size} (max_position_embeddings={ctx})",
            )
    names = [r["name"] for r in config["runs"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _need(not dupes, "runs", f"run names must be unique; repeated: {', '.join(dupes)}")
    _need(
        config["baseline_run"] in names,
        "baseline_run",
        f"{config['baseline_run']!r} is not a run name; choose one of {', '.join(names)}",
    )
    for i, run in enumerate(config["runs"]):
        spec = run_spec(config, run["name"])
        check_run(spec, f"runs[{i}] ({run['name']})")
        if spec.get("nvme_dir"):
            check_nvme_dir(spec, f"runs[{i}] ({run['name']}).nvme_dir", root)
    from .claims import load_claims  # claims.py builds on this module

    load_claims(repo_path(config["claims"]))


def check_scratch(sc: dict, key: str, qlora: bool) -> None:
    """A locally built Llama's shape: heads divide the width, and 4-bit layers get whole blocks."""
    _need(
        sc["hidden_size"] % sc["num_attention_heads"] == 0,
        f"{key}.hidden_size",
        f"{sc['hidden_size']} is not divisible by num_attention_heads={sc['num_attention_heads']}",
    )
    _need(
        sc["num_attention_heads"] % sc["num_key_value_heads"] == 0,
        f"{key}.num_key_value_heads",
        f"{sc['num_key_value_heads']} must divide num_attention_heads={sc['num_attention_heads']}",
    )
    if qlora:
        for field in ("hidden_size", "intermediate_size"):
            _need(
                sc[field] % 64 == 0,
                f"{key}.{field}",
                f"{sc[field]} must be a multiple of 64 for 4-bit (qlora) runs: bitsandbytes quantizes "
                "every input row in blocks of 64 values",
            )


def datasets(config: dict) -> dict[str, dict]:
    """Every dataset the profile prepares, by config key: the fine-tuning data and, for a scratch
    model, the pretraining corpus."""
    out = {"dataset": config["dataset"]}
    if config["model"]["source"] == "scratch":
        out["model.pretrain.dataset"] = config["model"]["pretrain"]["dataset"]
    return out


def check_run(spec: dict, where: str) -> None:
    """Checks of one resolved run spec (method, optimizer, offload engine)."""
    tr = spec["training"]
    _need(
        tr["warmup_steps"] < tr["max_steps"] or tr["warmup_steps"] == 0,
        f"{where}.training.warmup_steps",
        f"{tr['warmup_steps']} must be below max_steps={tr['max_steps']}",
    )
    _need(
        tr["save_steps"] <= tr["max_steps"],
        f"{where}.training.save_steps",
        f"{tr['save_steps']} exceeds max_steps={tr['max_steps']}: no checkpoint would be written before the end",
    )
    _need(
        spec["world_size"] % spec["num_nodes"] == 0,
        f"{where}.world_size",
        f"{spec['world_size']} is not a multiple of num_nodes={spec['num_nodes']}: every node runs "
        "world_size / num_nodes processes",
    )
    eval_blocks = tr["eval_max_blocks"]
    _need(
        eval_blocks is None or eval_blocks >= tr["micro_batch_size"],
        f"{where}.training.eval_max_blocks",
        f"{eval_blocks} is below micro_batch_size={tr['micro_batch_size']}: evaluation drops the last partial "
        "batch, so no block would be evaluated",
    )
    ds = read_deepspeed_config(spec)
    nvme = ds is not None and any(
        (ds.get("zero_optimization", {}).get(section) or {}).get("device") == "nvme"
        for section in ("offload_param", "offload_optimizer")
    )
    _need(
        not spec.get("nvme_dir") or nvme,
        f"{where}.nvme_dir",
        "is set but the run offloads nothing to NVMe (its deepspeed config has no offload_* device nvme); "
        "remove nvme_dir or use configs/deepspeed/zero3_offload_nvme.json",
    )


def check_nvme_dir(spec: dict, key: str, root: Path) -> None:
    """nvme_dir may be any folder of the user's, even a full one: the run writes only into a
    folder of its own inside it and removes only that. Refused: folders that must never be written
    in, and a swap folder of that name that this run did not create."""
    try:
        owned.refuse_dangerous(spec["nvme_dir"], key, root)
        run_folder = Path(root, "results", "runs", spec["run"])
        owned.check_claimable(
            owned.swap_dir(Path(root, spec["nvme_dir"]), spec["run"], run_folder),
            owned.owner_record(spec["run"], run_folder),
            key,
        )
    except owned.OwnershipError as err:
        raise ConfigError(str(err)) from err


def check_local_model(path: Path) -> None:
    """A hub model id that names a local folder must hold a config and safetensors weights."""
    if not path.is_dir():
        return  # a hub id: resolved (and refused if unreachable) by the job that loads it
    _need((path / "config.json").is_file(), "model.hub.id", f"folder {path} has no config.json")
    _need(
        any(path.glob("*.safetensors")),
        "model.hub.id",
        f"folder {path} has no *.safetensors weights (found: {', '.join(sorted(p.name for p in path.iterdir()))}); "
        "only safetensors are loaded",
    )


# DeepSpeed keys that Trainer fills from the run ("auto"), and the value each must have otherwise.
DEEPSPEED_BATCH_KEYS = {
    "train_batch_size": lambda t, w: t["micro_batch_size"] * t["gradient_accumulation_steps"] * w,
    "train_micro_batch_size_per_gpu": lambda t, w: t["micro_batch_size"],
    "gradient_accumulation_steps": lambda t, w: t["gradient_accumulation_steps"],
    "gradient_clipping": lambda t, w: t["max_grad_norm"],
}


def read_deepspeed_config(spec: dict) -> dict | None:
    """Read a run's DeepSpeed JSON and check it against the run (None for runs without one)."""
    if not spec.get("deepspeed"):
        return None
    path = Path(spec["deepspeed"])
    if not path.is_file():
        raise PreflightError(f"run {spec['run']}: deepspeed config {path} does not exist")
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PreflightError(f"run {spec['run']}: deepspeed config {path} is not valid JSON: {err}") from err
    check_deepspeed_config(ds, spec, path)
    return ds


def check_deepspeed_config(ds: dict, spec: dict, path: str | Path) -> None:
    """Batch keys must be "auto" (Trainer fills them) or equal what the run trains with; the
    offload targets must be usable by the run."""
    tr, ws = spec["training"], spec["world_size"]
    for key, expected in DEEPSPEED_BATCH_KEYS.items():
        value = ds.get(key, "auto")
        if value != "auto" and value != expected(tr, ws):
            raise PreflightError(
                f"run {spec['run']}: {path} sets {key}={value}, but the run trains with {key}={expected(tr, ws)} "
                f"(micro_batch_size={tr['micro_batch_size']} x gradient_accumulation_steps="
                f'{tr["gradient_accumulation_steps"]} x world_size={ws}); set it to "auto"'
            )
    zero = ds.get("zero_optimization", {})
    for section in ("offload_param", "offload_optimizer"):
        device = (zero.get(section) or {}).get("device", "none")
        if section == "offload_param" and device != "none" and zero.get("stage") != 3:
            raise PreflightError(
                f"run {spec['run']}: {path} offloads parameters (zero_optimization.offload_param) but sets "
                f"stage={zero.get('stage')}; parameter offload needs ZeRO stage 3"
            )
        if device == "nvme" and not spec.get("nvme_dir"):
            raise PreflightError(f"run {spec['run']}: {path} offloads {section} to nvme; set nvme_dir in the run")
        if device == "nvme":
            check_writable(Path(spec["nvme_dir"]), f"run {spec['run']}: nvme_dir")
    if tr["optimizer"].startswith("paged_"):
        raise PreflightError(
            f"run {spec['run']}: training.optimizer={tr['optimizer']} cannot be combined with "
            "deepspeed, which owns the optimizer (use offload_optimizer in the DeepSpeed config instead)"
        )


def check_writable(path: Path, what: str) -> None:
    """``path`` can be created or written: its nearest existing ancestor is a writable folder."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"{what}: {path} is not writable ({existing} is not a writable folder)")


def _resolve(defaults: dict, override: dict | None) -> dict:
    return {**defaults, **(override or {})}


def run_spec(config: dict, name: str) -> dict:
    """The resolved settings of one run: defaults merged with the run's overrides."""
    matches = [r for r in config["runs"] if r["name"] == name]
    if not matches:
        raise ConfigError(f"no run named {name!r} in config key runs")
    return _spec(config, matches[0])


def _spec(config: dict, run: dict) -> dict:
    """A job's spec from a run entry (the shape of `runs:` items) and the profile's defaults."""
    return {
        "run": run["name"],
        "method": run["method"],
        "deepspeed": repo_path(run.get("deepspeed")),
        "nvme_dir": run.get("nvme_dir"),
        "world_size": run.get("world_size", 1),
        "num_nodes": run.get("num_nodes", 1),
        "seed": config["seed"],
        "training": _resolve(config["training"], run.get("training")),
        "lora": _resolve(config["lora"], run.get("lora")),
        "quantization": _resolve(config["quantization"], run.get("quantization")),
        "model": model_ref(config, run.get("model_size", "base")),
        "dataset": run_dataset(config, run)["name"],
        "trust_remote_code": config["model"]["trust_remote_code"],
        "model_size": run.get("model_size", "base"),
        "block_size": run_dataset(config, run)["block_size"],
    }


def pretrain_spec(config: dict, name: str | None = None) -> dict:
    """The short pretraining of a scratch model (the base one unless `name` says which size): a
    full-model run on its pretraining corpus."""
    pre = config["model"]["pretrain"]
    ds = pre["dataset"]
    name = name or config["model"]["name"]
    training = {
        "max_steps": pre["steps"],
        "micro_batch_size": pre["micro_batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": pre["learning_rate"],
        "lr_scheduler": "cosine",
        "warmup_steps": max(1, pre["steps"] // 10),
        "weight_decay": 0.0,
        "save_steps": pre["steps"],
        "logging_steps": max(1, pre["steps"] // 20),
        "dtype": "auto",
        "gradient_checkpointing": False,
        "optimizer": "adamw_torch",
        "activation_offload": False,
        "eval_max_blocks": ds.get("max_validation_blocks"),
    }
    return {
        **_spec(config, {"name": f"pretrain-{name}", "method": "full", "training": training}),
        "model": {"path": f"results/models/{name}-init", "revision": None, "name": f"{name}-init"},
        "dataset": ds["name"],
        "trust_remote_code": False,
    }


def base_eval_spec(config: dict) -> dict:
    """Evaluating the untrained base model: the defaults of `training` (dtype, batch, eval blocks)."""
    return _spec(config, {"name": "base", "method": "full"})


def repo_path(path: str | None) -> str | None:
    """A path from the config that names a file of this repository (relative to its root)."""
    if path is None:
        return None
    return str(Path(path) if Path(path).is_absolute() else REPO / path)


def model_ref(config: dict, size: str = "base") -> dict:
    """Where a run's base model comes from: a local folder (scratch) or a hub id + revision."""
    model = config["model"]
    if model["source"] == "hub":
        return {"path": model["hub"]["id"], "revision": model["hub"]["revision"], "name": model["name"]}
    name = model_name(config, size)
    return {"path": f"results/models/{name}", "revision": None, "name": name}


def spec_sha256(spec: Any) -> str:
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def load_spec(text_or_path: str) -> dict:
    """A spec given on the command line: inline JSON or a path to a JSON file."""
    if text_or_path.lstrip().startswith("{"):
        return json.loads(text_or_path)
    with open(os.fspath(text_or_path)) as fh:
        return json.load(fh)
