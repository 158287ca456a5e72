"""Configuration: schema validation, sweeps and the cross-key checks made before any job.

The Snakefile validates the merged config with Snakemake's own ``validate`` against
``workflow/schemas/config.schema.yaml`` and then calls :func:`check_config` for what a JSON schema
cannot say (unique run names, block size against context length, files that must exist, a
DeepSpeed config checked key by key against DeepSpeed's own and against the run, nvme_dir against
the folders no run may write in, the claims file). The jobs' specs are built in offloadbench.spec.
"""

from __future__ import annotations

import copy
from pathlib import Path

from . import dsconfig, owned
from .claims_file import load_claims
from .errors import ConfigError, PreflightError
from .io import read_yaml
from .spec import REPO, datasets, repo_path, run_size, run_spec, scratch_config

SCHEMA_DIR = REPO / "workflow" / "schemas"
DEFAULT_CONFIG = REPO / "configs" / "config.yaml"


def deep_merge(base: dict, override: dict) -> dict:
    """Merge like Snakemake's --configfile: dicts recursively, everything else replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    config = expand_runs(config)
    check_config(config)
    return config


def expand_runs(config: dict) -> dict:
    """The config with its generated runs: the seed repeats, then the sweep's points."""
    return expand_sweep(expand_repeats(config))


def expand_repeats(config: dict) -> dict:
    """The config with its runs' seed repeats: a run with ``seeds: N`` gets N - 1 more runs named
    <run>.s<k> (k = 2 .. N) that differ from it only by the seed (config seed + k - 1)."""
    extra = []
    for template in config["runs"]:
        for k in range(2, template.get("seeds", 1) + 1):
            # seed and repeat_of are markers the schema forbids in a config's runs
            run = {**copy.deepcopy(template), "name": f"{template['name']}.s{k}", "seed": config["seed"] + k - 1}
            run["repeat_of"] = template["name"]
            if run.get("nvme_dir"):  # the repeats' swap files must not collide either
                run["nvme_dir"] = f"{run['nvme_dir']}.s{k}"
            extra.append(run)
    return {**config, "runs": config["runs"] + extra}


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
                refuse_user_path(ds["files"][split], f"{key}.files.{split}", root)
                _need(path.is_file(), f"{key}.files.{split}", f"file {path} does not exist")
                _need(path.stat().st_size > 0, f"{key}.files.{split}", f"file {path} is empty: no text to train on")
    names = [ds["name"] for ds in datasets(config).values()]
    _need(len(set(names)) == len(names), "model.pretrain.dataset.name", "must differ from dataset.name")
    _need(model["source"] != "hub" or "hub" in model, "model.hub", "required when model.source is hub")
    if model["source"] == "hub":
        if (root / model["hub"]["id"]).is_dir():
            refuse_user_path(model["hub"]["id"], "model.hub.id", root)
        check_local_model(root / model["hub"]["id"])
    if model["source"] == "scratch":
        _need("scratch" in model, "model.scratch", "required when model.source is scratch")
        qlora = any(r["method"] == "qlora" for r in config["runs"])
        check_scratch(model["scratch"], "model.scratch", qlora)
        for size, overrides in model.get("sizes", {}).items():
            if overrides is None:  # this profile trains the base model for runs of that size
                continue
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
        size = run_size(config, run)
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
    load_claims(repo_path(config["claims"]))
    for key, path in (config.get("prediction") or {}).items():
        _need(Path(repo_path(path)).is_file(), f"prediction.{key}", f"file {repo_path(path)} does not exist")


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


def refuse_user_path(path: str, key: str, root: Path) -> None:
    try:
        owned.refuse_inside_steps(path, key, root)
    except owned.OwnershipError as err:
        raise ConfigError(str(err)) from err


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


def read_deepspeed_config(spec: dict) -> dict | None:
    """A run's DeepSpeed JSON (None for runs without one), every key checked against DeepSpeed's
    own config models and every setting against the run (offloadbench.dsconfig)."""
    if not spec.get("deepspeed"):
        return None
    path = Path(spec["deepspeed"])
    try:
        ds = dsconfig.read(path)
        dsconfig.check_keys(ds, path)
        dsconfig.check_against_run(ds, spec, path)
    except dsconfig.DeepSpeedConfigError as err:
        text = str(err)
        raise PreflightError(text if text.startswith(f"run {spec['run']}:") else f"run {spec['run']}: {text}") from err
    return ds
