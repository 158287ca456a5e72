"""The tree of keys the installed DeepSpeed reads (:func:`schema`), and dotted paths in it and in a config.

The valid keys are not a list kept here: they are read from the installed DeepSpeed when first
needed: the pydantic models of the sections (``model_fields`` with their aliases and
``deprecated`` / ``new_param`` metadata), ``AIO_DEFAULT_DICT``, DeepSpeed's lists of removed keys,
and the top-level keys ``DeepSpeedConfig`` looks up, recorded by running its parser on a dict that
notes every lookup. Importing this module imports no DeepSpeed (that takes seconds); the first
call of :func:`schema` does.
"""

from __future__ import annotations

import functools
import json
import typing
from dataclasses import dataclass, field
from typing import Any

NO_DEFAULT = object()


@dataclass(eq=False)
class Key:
    """One key DeepSpeed reads: its canonical name and dotted path, what it holds, how it ended."""

    name: str  # canonical spelling: the pydantic alias where there is one (the long stage3_* names)
    path: str  # canonical dotted path
    children: dict[str, Key] | None = None  # every accepted spelling -> Key; None: contents not checked
    pydantic: bool = False  # children come from a pydantic model (extra keys forbidden by DeepSpeed)
    default: Any = NO_DEFAULT
    is_int: bool = False
    deprecated: str | None = None  # what to write instead
    why: str = ""  # what DeepSpeed does with the old name
    removed: str | None = None  # DeepSpeed's own message


@dataclass
class Schema:
    version: str
    top: dict[str, Key]
    elsewhere: dict[str, list[Key]] = field(default_factory=dict)  # name -> every key of that name


# Renames the installed DeepSpeed keeps no record of, so they cannot be read from it. Older
# DeepSpeed read aio.thread_count (swap_tensor/constants.py AIO_THREAD_COUNT); deepspeedai/DeepSpeed
# pull request 7056 ("Rename aio_thread_count to intra_op_parallelism", 2025) renamed it, and 0.19.8
# reads aio.intra_op_parallelism, the same number of I/O threads per operation, and ignores
# thread_count silently.
RENAMED = {"aio.thread_count": "aio.intra_op_parallelism"}

# Sections DeepSpeedConfig parses with a pydantic model (module, class); the keys come from the model.
_SECTION_MODELS = {
    "zero_optimization": ("deepspeed.runtime.zero.config", "DeepSpeedZeroConfig"),
    "bf16": ("deepspeed.runtime.precision_config", "DeepSpeedBF16Config"),
    "fp16": ("deepspeed.runtime.precision_config", "DeepSpeedFP16Config"),
    "comms_logger": ("deepspeed.comm.config", "CommsLoggerConfig"),
}


class _Recorder(dict):
    """A dict that notes every key looked up in it: get, [], in, keys(), setdefault, pop."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.looked_up: set[str] = set()

    def get(self, key, default=None):
        self.looked_up.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.looked_up.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.looked_up.add(key)
        return super().__contains__(key)

    def setdefault(self, key, default=None):
        self.looked_up.add(key)
        return super().setdefault(key, default)

    def pop(self, key, *default):
        self.looked_up.add(key)
        return super().pop(key, *default)

    def keys(self):
        recorder = self

        class Keys:
            def __contains__(self, key):
                recorder.looked_up.add(key)
                return dict.__contains__(recorder, key)

            def __iter__(self):
                return iter(dict.keys(recorder))

        return Keys()


# Top-level keys DeepSpeed reads outside DeepSpeedConfig's parser, where no probe reaches:
# deepspeed/__init__.py initialize() (line 543, the data x sequence parallel mesh), also read by
# DeepSpeedConfig.__init__ only once torch.distributed is up.
_READ_BY_INITIALIZE = {"sequence_parallel_size", "data_parallel_size"}


def _top_level_keys() -> set[str]:
    """Every top-level key DeepSpeedConfig looks up (deepspeed/runtime/config.py and the config
    classes it calls), recorded by running its parser on a config with only the batch keys."""
    from deepspeed.runtime.config import DeepSpeedConfig

    probe = _Recorder(train_batch_size=1, train_micro_batch_size_per_gpu=1, gradient_accumulation_steps=1)
    DeepSpeedConfig(probe)  # the copy it parses shares probe.looked_up (copy.copy keeps __dict__)
    return set(probe.looked_up) | _READ_BY_INITIALIZE


def _submodel(annotation) -> type | None:
    from pydantic import BaseModel

    for t in (annotation, *typing.get_args(annotation)):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


def _model_children(model, prefix: str) -> dict[str, Key]:
    """The keys of a DeepSpeed pydantic model: each field under its alias and its field name
    (DeepSpeedConfigModel sets populate_by_name), deprecated ones with what replaces them."""
    out: dict[str, Key] = {}
    fields = model.model_fields
    for fname, f in fields.items():
        name = f.alias or fname
        path = f"{prefix}.{name}"
        sub = _submodel(f.annotation)
        default = f.get_default(call_default_factory=False)
        key = Key(
            name,
            path,
            children=_model_children(sub, path) if sub else None,
            pydantic=bool(sub),
            default=int(default) if isinstance(default, int) and not isinstance(default, bool) else default,
            is_int=f.annotation is int,
        )
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        if extra.get("deprecated"):
            new = extra.get("new_param", "")
            target = fields.get(new)
            new_name = (target.alias or new) if target is not None else new
            key.deprecated = f"{prefix}.{new_name}" if target is not None else new
            key.why = (
                "DeepSpeed still translates it, with a warning, but Trainer reads only the current name"
                if extra.get("set_new_param", True)
                else "DeepSpeed ignores it, with a warning"
            )
            fn = extra.get("new_param_fn")
            if target is not None and fn and extra.get("set_new_param", True):
                value = fn(True)  # e.g. cpu_offload: true -> offload_optimizer {"device": "cpu"}
                if hasattr(value, "model_dump"):
                    value = value.model_dump(mode="json", include={"device"})
                if value is not None and value is not True:
                    key.deprecated += f" = {json.dumps(value)}"
        out[name] = key
        out[fname] = key
    return out


@functools.lru_cache(maxsize=1)
def schema() -> Schema:
    """Every key the installed DeepSpeed reads, as a tree of :class:`Key` (built once per process)."""
    import importlib

    import deepspeed
    import deepspeed.runtime.config as ds_config
    from deepspeed.monitor.config import DeepSpeedMonitorConfig
    from deepspeed.runtime import precision_config
    from deepspeed.runtime.swap_tensor.aio_config import AIO_DEFAULT_DICT

    removed_top = getattr(ds_config, "_REMOVED_TOP_LEVEL_CONFIG_KEYS", {})
    removed_zero = getattr(ds_config, "_REMOVED_ZERO_CONFIG_KEYS", {})
    top: dict[str, Key] = {}
    for name in sorted(_top_level_keys() - set(removed_top)):
        top[name] = Key(name, name)
    models = {name: getattr(importlib.import_module(mod), cls) for name, (mod, cls) in _SECTION_MODELS.items()}
    for name, f in DeepSpeedMonitorConfig.model_fields.items():  # tensorboard, wandb, csv_monitor, comet
        if _submodel(f.annotation) is not None:
            models[name] = _submodel(f.annotation)
    for name, model in models.items():
        if name not in top:
            raise RuntimeError(
                f"DeepSpeed {deepspeed.__version__} no longer reads a top-level {name!r}; update dsconfig"
            )
        top[name] = Key(name, name, children=_model_children(model, name), pydantic=True)
    if "aio" not in top:
        raise RuntimeError(f"DeepSpeed {deepspeed.__version__} no longer reads a top-level 'aio'; update dsconfig")
    top["aio"] = Key("aio", "aio", children={k: Key(k, f"aio.{k}", default=v) for k, v in AIO_DEFAULT_DICT.items()})
    for old, new in RENAMED.items():
        section, name = old.split(".")
        top[section].children[name] = Key(
            name, old, deprecated=new, why=f"DeepSpeed {deepspeed.__version__} ignores it"
        )
    old_bf16 = getattr(precision_config, "BFLOAT16_OLD", None)  # "keeping for backwards compatibility"
    if old_bf16 in top:
        top[old_bf16] = Key(
            old_bf16,
            old_bf16,
            deprecated=precision_config.BFLOAT16,
            why="DeepSpeed reads it only without a bf16 block; Trainer fills and checks only bf16",
        )
    for name, message in removed_top.items():
        top[name] = Key(name, name, removed=message)
    for name, message in removed_zero.items():
        top["zero_optimization"].children[name] = Key(name, f"zero_optimization.{name}", removed=message)

    elsewhere: dict[str, list[Key]] = {}

    def index(section: dict[str, Key]) -> None:
        for spelling, key in section.items():
            if not key.deprecated and not key.removed and key not in elsewhere.setdefault(spelling, []):
                elsewhere[spelling].append(key)
            if key.children and spelling == key.name:
                index(key.children)

    index(top)
    return Schema(deepspeed.__version__, top, elsewhere)


# ---------------------------------------------------------------------------------------------
# Dotted paths


def lookup(node: Any, dotted: str) -> tuple[dict | None, str]:
    """The mapping that holds the last part of ``dotted`` and that part (like accelerate's find_config_node)."""
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def resolve_key(dotted: str) -> Key | None:
    """The :class:`Key` at a dotted path (None where DeepSpeed has no key there)."""
    section: dict[str, Key] | None = schema().top
    key = None
    for part in dotted.split("."):
        key = section.get(part) if section is not None else None
        if key is None:
            return None
        section = key.children
    return key


def canonical_path(dotted: str) -> str | None:
    """``dotted`` with every part in its canonical spelling (None for keys DeepSpeed does not know)."""
    section: dict[str, Key] | None = schema().top
    parts, out = dotted.split("."), []
    for i, part in enumerate(parts):
        key = section.get(part) if section is not None else None
        if key is None:
            if section is None and out:  # inside a section whose contents are not checked (optimizer.params)
                return ".".join(out + parts[i:])
            return None
        out.append(key.name)
        section = key.children
    return ".".join(out)
