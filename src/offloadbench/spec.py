"""The resolved spec of each job: one JSON object with every setting a step needs.

Every rule hands its script such a spec (:func:`run_spec`, :func:`pretrain_spec`, ...) as a
``params`` value, so a change of config reruns exactly the jobs whose spec changed (Snakemake's
params rerun trigger). The scripts never read the YAML themselves. offloadbench.resolve adds what
depends on the model (``RESOLVED_KEYS``); :func:`config_spec` takes it off again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# What offloadbench.resolve adds to a run's spec before it trains.
RESOLVED_KEYS = ("deepspeed_config", "disk", "locked_bytes", "launcher")


def config_spec(spec: dict) -> dict:
    """A (resolved) spec as the config made it: without RESOLVED_KEYS. Its hash is the config's."""
    return {k: v for k, v in spec.items() if k not in RESOLVED_KEYS}


# Keys of a model.sizes entry that are not LlamaConfig fields.
SIZE_KEYS = ("pretrain_steps", "training")


def scratch_config(config: dict, size: str = "base") -> dict:
    """model.scratch with the overrides of a model size (base = the profile's own model): the
    LlamaConfig fields only (a size's pretrain_steps and training are not)."""
    fields = {**config["model"]["scratch"], **(config["model"].get("sizes", {}).get(size) or {})}
    for key in SIZE_KEYS:
        fields.pop(key, None)
    return fields


def run_size(config: dict, run: dict) -> str:
    """The model size a run entry trains: its model_size, or base where the profile sets that
    size to null (a profile too small for a separate memory scale, such as the tests' tiny one)."""
    size = run.get("model_size", "base")
    if size != "base" and size in config["model"].get("sizes", {}) and config["model"]["sizes"][size] is None:
        return "base"
    return size


def size_training(config: dict, size: str) -> dict:
    """The training overrides of a model size (a memory-scale size measures in a few steps)."""
    return (config["model"].get("sizes", {}).get(size) or {}).get("training") or {}


def pretrain_steps(config: dict, size: str = "base") -> int:
    """How long a scratch model of this size is pretrained (0: its runs start from the initialised model)."""
    return (config["model"].get("sizes", {}).get(size) or {}).get(
        "pretrain_steps", config["model"]["pretrain"]["steps"]
    )


def model_name(config: dict, size: str = "base") -> str:
    return config["model"]["name"] if size == "base" else f"{config['model']['name']}-{size}"


def models(config: dict) -> dict[str, dict]:
    """Every scratch model the profile builds: name -> LlamaConfig fields (base first)."""
    if config["model"]["source"] != "scratch":
        return {}
    sizes = ["base", *sorted({run_size(config, r) for r in config["runs"]} - {"base"})]
    return {model_name(config, size): scratch_config(config, size) for size in sizes}


def run_dataset(config: dict, run: dict) -> dict:
    """The fine-tuning data of a run: the profile's dataset, re-blocked if the run sets block_size."""
    ds = config["dataset"]
    block = run.get("block_size")
    if block is None or block == ds["block_size"]:
        return ds
    return {**ds, "name": f"{ds['name']}-b{block}", "block_size": block}


def datasets(config: dict) -> dict[str, dict]:
    """Every dataset the profile prepares, by config key: the fine-tuning data and, for a scratch
    model, the pretraining corpus."""
    out = {"dataset": config["dataset"]}
    if config["model"]["source"] == "scratch":
        out["model.pretrain.dataset"] = config["model"]["pretrain"]["dataset"]
    return out


def declared_runs(config: dict) -> list[str]:
    """The profile's own runs and their seed repeats, without the sweep's points (claims compare
    these with the base model)."""
    return [r["name"] for r in config["runs"] if not r.get("sweep_point")]


def repeats_of(config: dict) -> dict[str, list[str]]:
    """Each repeated run with its repeats, itself first: {run: [run, run.s2, ...]} (`repeats`)."""
    groups: dict[str, list[str]] = {}
    for r in config["runs"]:
        if r.get("repeat_of"):
            groups.setdefault(r["repeat_of"], [r["repeat_of"]]).append(r["name"])
    return groups


def _resolve(defaults: dict, override: dict | None) -> dict:
    return {**defaults, **(override or {})}


def run_spec(config: dict, name: str) -> dict:
    """The resolved settings of one run: defaults merged with the run's overrides."""
    matches = [r for r in config["runs"] if r["name"] == name]
    if not matches:
        raise ConfigError(f"no run named {name!r} in config key runs")
    return _spec(config, matches[0])


def _spec(config: dict, run: dict) -> dict:
    """A job's spec from a run entry (the shape of `runs:` items) and the profile's defaults:
    training = the defaults, then the model size's training overrides, then the run's own."""
    size = run_size(config, run)
    return {
        "run": run["name"],
        "method": run["method"],
        "deepspeed": repo_path(run.get("deepspeed")),
        "nvme_dir": run.get("nvme_dir"),
        "world_size": run.get("world_size", 1),
        "num_nodes": run.get("num_nodes", 1),
        "seed": run.get("seed", config["seed"]),
        **({"repeat_of": run["repeat_of"]} if run.get("repeat_of") else {}),
        "training": {**config["training"], **size_training(config, size), **(run.get("training") or {})},
        "lora": _resolve(config["lora"], run.get("lora")),
        "quantization": _resolve(config["quantization"], run.get("quantization")),
        "model": model_ref(config, size),
        "dataset": run_dataset(config, run)["name"],
        "trust_remote_code": config["model"]["trust_remote_code"],
        "model_size": size,
        "block_size": run_dataset(config, run)["block_size"],
    }


def pretrain_spec(config: dict, name: str | None = None) -> dict:
    """The short pretraining of a scratch model (the base one unless `name` says which size): a
    full-model run on its pretraining corpus."""
    pre = config["model"]["pretrain"]
    ds = pre["dataset"]
    name = name or config["model"]["name"]
    sizes = {model_name(config, size): size for size in config["model"].get("sizes", {})}
    steps = pretrain_steps(config, sizes.get(name, "base"))
    training = {
        "max_steps": steps,
        "micro_batch_size": pre["micro_batch_size"],
        "gradient_accumulation_steps": 1,
        "learning_rate": pre["learning_rate"],
        "lr_scheduler": "cosine",
        "warmup_steps": max(1, steps // 10),
        "weight_decay": 0.0,
        "save_steps": max(1, steps),
        "logging_steps": max(1, steps // 20),
        "dtype": "auto",
        "gradient_checkpointing": False,
        "optimizer": "adamw_torch",
        "activation_offload": False,
        "eval_max_blocks": ds.get("max_validation_blocks"),
        "cpu_threads": None,  # every core: nothing else can run until the base model exists
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
    if pretrain_steps(config, size) == 0:  # fine-tuned as initialised (a memory-scale size)
        return {"path": f"results/models/{name}-init", "revision": None, "name": f"{name}-init"}
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
