"""The one reader of DeepSpeed JSON configs: keys checked against DeepSpeed, "auto" filled as Trainer does.

Authors bring the DeepSpeed config they trained with (LLaMA-Factory, Axolotl, the transformers docs).
DeepSpeed ignores unknown top-level keys silently, and Hugging Face Trainer fills ``"auto"`` only
under exact key names, so a config can look right and still not do what it says. This module:

- :func:`read` parses the file (duplicate keys refused);
- :func:`check_keys` refuses every key DeepSpeed does not read as written: unknown or misspelled
  (with the closest valid name), deprecated or outdated (with the current name), at the wrong level,
  removed, an accelerate setting instead of a DeepSpeed key, or an ``"auto"`` that nobody fills;
- :func:`normalise` writes every key under its canonical name (``max_live_parameters`` becomes
  ``stage3_max_live_parameters``), :func:`get` reads one with DeepSpeed's default;
- :func:`resolve_auto` fills every ``"auto"`` with the value Trainer (and accelerate, and
  offloadbench for its own two extensions) would give it;
- :func:`check_against_run` refuses settings that contradict the run's spec, with the fix;
- :func:`validate` runs DeepSpeed's own config parser on a resolved config.

The valid keys are not a list kept here: they are read from the installed DeepSpeed when first
needed (:func:`schema`): the pydantic models of the sections (``model_fields`` with their aliases
and ``deprecated`` / ``new_param`` metadata), ``AIO_DEFAULT_DICT``, DeepSpeed's lists of removed
keys, and the top-level keys ``DeepSpeedConfig`` looks up, recorded by running its parser on a
dict that notes every lookup. Importing this module imports no DeepSpeed (that takes seconds); the
first check does.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DeepSpeedConfigError(ValueError):
    """A DeepSpeed config that would not do what it says; the message names the file, each key and the fix."""


# ---------------------------------------------------------------------------------------------
# Reading


def read(path: str | Path) -> dict:
    """The config in ``path`` as a dict; a missing file, invalid JSON or a key given twice is refused."""
    path = Path(path)
    if not path.is_file():
        raise DeepSpeedConfigError(f"DeepSpeed config {path} does not exist")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        seen = [k for k, _ in pairs]
        twice = sorted({k for k in seen if seen.count(k) > 1})
        if twice:
            # json.load keeps the last one silently (so does Trainer, which reads the file with json.load)
            raise DeepSpeedConfigError(f"DeepSpeed config {path} sets {', '.join(twice)} twice in one mapping")
        return dict(pairs)

    try:
        ds = json.loads(path.read_text(), object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise DeepSpeedConfigError(f"DeepSpeed config {path} is not valid JSON: {err}") from err
    if not isinstance(ds, dict):
        raise DeepSpeedConfigError(f"DeepSpeed config {path} must hold a mapping of keys, not {type(ds).__name__}")
    return ds


# ---------------------------------------------------------------------------------------------
# The keys DeepSpeed reads, taken from the installed DeepSpeed

_NO_DEFAULT = object()


@dataclass(eq=False)
class Key:
    """One key DeepSpeed reads: its canonical name and dotted path, what it holds, how it ended."""

    name: str  # canonical spelling: the pydantic alias where there is one (the long stage3_* names)
    path: str  # canonical dotted path
    children: dict[str, Key] | None = None  # every accepted spelling -> Key; None: contents not checked
    pydantic: bool = False  # children come from a pydantic model (extra keys forbidden by DeepSpeed)
    default: Any = _NO_DEFAULT
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
# Where "auto" is filled

# TrainingArguments' defaults for what the run spec has no key for (transformers/training_args.py:
# adam_beta1, adam_beta2, adam_epsilon); train.training_args leaves them at these.
ADAM_BETAS = [0.9, 0.999]
ADAM_EPSILON = 1e-8


def trainer_values(training: dict, world_size: int, dtype: str) -> dict[str, tuple[Any, str]]:
    """What Trainer compares and fills for each key: dotted key -> (value, where the run sets it).

    transformers/integrations/deepspeed.py, HfTrainerDeepSpeedConfig: trainer_config_process
    (train_batch_size = world_size x per_device_train_batch_size x gradient_accumulation_steps,
    line 143; the fill_match calls of lines 144-184) and trainer_config_finalize (lines 245-256:
    total_num_steps = num_training_steps = max_steps; warmup_num_steps =
    max(1, args.get_warmup_steps(num_training_steps)), training_args.py get_warmup_steps).
    ``training`` is a run spec's training dict, ``dtype`` the one it trains in (fp32 | bf16 | fp16).
    """
    tr = training
    mb, ga, steps, warmup = (
        tr["micro_batch_size"],
        tr["gradient_accumulation_steps"],
        tr["max_steps"],
        tr["warmup_steps"],
    )
    warmup_steps = int(warmup) if warmup >= 1 else math.ceil(steps * warmup)
    return {
        "train_micro_batch_size_per_gpu": (mb, "training.micro_batch_size"),
        "gradient_accumulation_steps": (ga, "training.gradient_accumulation_steps"),
        "train_batch_size": (world_size * mb * ga, "micro_batch_size x gradient_accumulation_steps x world_size"),
        "gradient_clipping": (tr["max_grad_norm"], "training.max_grad_norm"),
        "optimizer.params.lr": (tr["learning_rate"], "training.learning_rate"),
        "optimizer.params.betas": (list(ADAM_BETAS), "Trainer's default adam_beta1, adam_beta2"),
        "optimizer.params.eps": (ADAM_EPSILON, "Trainer's default adam_epsilon"),
        "optimizer.params.weight_decay": (tr["weight_decay"], "training.weight_decay"),
        "scheduler.params.warmup_min_lr": (0, ""),  # fill_only: not a Trainer argument
        "scheduler.params.warmup_max_lr": (tr["learning_rate"], "training.learning_rate"),
        "scheduler.params.total_num_steps": (steps, "training.max_steps"),
        "scheduler.params.warmup_num_steps": (max(1, warmup_steps), "training.warmup_steps"),
        "fp16.enabled": (dtype == "fp16", "training.dtype"),
        "bf16.enabled": (dtype == "bf16", "training.dtype"),
    }


def hidden_size_values(hidden_size: int) -> dict[str, int]:
    """The ZeRO keys Trainer derives from the model's hidden size (transformers/integrations/
    deepspeed.py trainer_config_finalize, lines 232-242; accelerate/accelerator.py lines 2321-2327
    fills the same numbers for stages below 3, where Trainer leaves the stage3_* keys alone)."""
    h = hidden_size
    return {
        "zero_optimization.reduce_bucket_size": h * h,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * h * h),
        "zero_optimization.stage3_param_persistence_threshold": 10 * h,
    }


# Every dotted key (as written: Trainer and accelerate look keys up by their exact names, like
# accelerate's find_config_node) whose "auto" the run fills. Trainer: the two tables above;
# accelerate (accelerate/accelerator.py Accelerator._prepare_deepspeed, line 2225) fills what is
# still "auto" after Trainer, which adds only stage3_gather_16bit_weights_on_model_save = false.
ACCELERATE_GATHER = "zero_optimization.stage3_gather_16bit_weights_on_model_save"
_ANY_RUN = dict.fromkeys(
    ("micro_batch_size", "gradient_accumulation_steps", "max_steps", "warmup_steps", "max_grad_norm", "learning_rate"),
    1,
)
TRAINER_AUTO = (*trainer_values({**_ANY_RUN, "weight_decay": 0}, 1, "fp32"), *hidden_size_values(1), ACCELERATE_GATHER)
# offloadbench's own: the NVMe buffers hold the largest tensor; the swap folder is the run's nvme_dir.
OFFLOADBENCH_AUTO = (
    "zero_optimization.offload_param.buffer_size",
    "zero_optimization.offload_param.nvme_path",
    "zero_optimization.offload_optimizer.nvme_path",
)


# ---------------------------------------------------------------------------------------------
# Checking the keys


def _lookup(node: Any, dotted: str) -> tuple[dict | None, str]:
    """The mapping that holds the last part of ``dotted`` and that part (like accelerate's find_config_node)."""
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def _auto_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _auto_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix] if node == "auto" else []


def _accelerate_keys() -> dict[str, str]:
    """accelerate's DeepSpeed launch settings (the deepspeed_config: block of an accelerate config
    YAML, `accelerate launch --zero3_init_flag ...`): name -> what to write in a DeepSpeed JSON."""
    import ast
    import inspect

    from accelerate.commands.launch import launch_command_parser
    from accelerate.utils import DeepSpeedPlugin

    mapping: dict[str, str] = {}
    try:  # DeepSpeedPlugin.__post_init__ maps its settings to DeepSpeed keys in a local dict
        tree = ast.parse(inspect.getsource(DeepSpeedPlugin.__post_init__).strip())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "plugin_to_config_mapping" for t in node.targets
            ):
                mapping = ast.literal_eval(node.value)
    except (OSError, TypeError, ValueError, SyntaxError):
        pass
    out = {}
    for group in launch_command_parser()._action_groups:
        if group.title == "DeepSpeed Arguments":
            for action in group._group_actions:
                name = action.dest
                if name in mapping:
                    out[name] = f"in a DeepSpeed JSON, write {mapping[name]}"
                else:
                    out[name] = f"accelerate: {' '.join((action.help or '').split())}"
    return out


def check_keys(ds: dict, path: str | Path) -> None:
    """Refuse every key the installed DeepSpeed does not read as written, all of them at once.

    Each line names the dotted key and the fix: the closest valid name for a misspelling, the
    current name for a deprecated or outdated key, where a key at the wrong level belongs, the
    DeepSpeed key for an accelerate setting, DeepSpeed's message for a removed feature, and a
    value for an ``"auto"`` that neither Trainer nor offloadbench fills. Aliases DeepSpeed accepts
    (``max_live_parameters`` for ``stage3_max_live_parameters``) pass.
    """
    s = schema()
    problems: list[str] = []
    flagged: list[str] = []  # dotted keys already refused: their "auto" values are not reported again
    accelerate: dict[str, str] | None = None

    def refuse(dotted: str, message: str) -> None:
        problems.append(f"{dotted}: {message}")
        flagged.append(dotted)

    def unknown(name: str, dotted: str, value: Any, section: dict[str, Key], pydantic: bool) -> None:
        nonlocal accelerate
        if "." not in dotted:
            accelerate = _accelerate_keys() if accelerate is None else accelerate
            if name in accelerate:
                refuse(
                    dotted,
                    f"an accelerate launch setting (`accelerate launch --{name}`, the deepspeed_config: block of an "
                    f"accelerate config YAML), not a DeepSpeed key; DeepSpeed ignores it ({accelerate[name]})",
                )
                return
        close = difflib.get_close_matches(name, list(section), n=1, cutoff=0.8)
        if close:
            key = section[close[0]]
            hint = f", itself deprecated: write {key.deprecated}" if key.deprecated else ""
            refuse(dotted, f"unknown key; did you mean {key.path}{hint}?")
            return
        others = s.elsewhere.get(name, [])
        if others:
            refuse(dotted, f"not read at this level; DeepSpeed reads it as {' or '.join(k.path for k in others[:3])}")
            if len(others) == 1 and others[0].children is not None and isinstance(value, dict):
                walk(value, others[0].children, dotted, others[0].pydantic)
            return
        effect = "refuses it when the engine starts" if pydantic else "ignores it silently"
        refuse(dotted, f"not a DeepSpeed {s.version} key; DeepSpeed {effect} (delete it: it does nothing)")

    def walk(node: dict, section: dict[str, Key], prefix: str, pydantic: bool) -> None:
        seen: dict[int, str] = {}
        for name, value in node.items():
            dotted = f"{prefix}.{name}" if prefix else name
            key = section.get(name)
            if key is None:
                unknown(name, dotted, value, section, pydantic)
                continue
            if id(key) in seen:
                refuse(dotted, f"set twice in one section, as {seen[id(key)]} and as {name}")
            seen[id(key)] = name
            if key.removed:
                refuse(dotted, f"removed from DeepSpeed: {key.removed}")
            elif key.deprecated:
                refuse(dotted, f"outdated name ({key.why}); write {key.deprecated} instead")
            elif key.children is not None:
                if isinstance(value, dict):
                    walk(value, key.children, dotted, key.pydantic)
                elif value is not None:
                    refuse(dotted, f"must be a mapping of keys, not {json.dumps(value)}")

    walk(ds, s.top, "", False)

    filled = set(TRAINER_AUTO) | set(OFFLOADBENCH_AUTO)
    for dotted in _auto_paths(ds):
        if dotted in filled or any(dotted == f or dotted.startswith(f + ".") for f in flagged):
            continue
        canonical = _canonical_path(dotted)
        if canonical in filled:
            refuse(
                dotted,
                f'"auto" is filled by Trainer only under the name {canonical}; under this name DeepSpeed drops it '
                f"and uses its default{_default_text(canonical)}. Write {canonical}",
            )
        else:
            refuse(
                dotted,
                f'"auto" here is filled by neither Trainer nor offloadbench; DeepSpeed would use its default'
                f"{_default_text(canonical)} or fail. Write a value",
            )
    if problems:
        raise DeepSpeedConfigError(
            f"DeepSpeed config {path}: {len(problems)} key(s) DeepSpeed {s.version} does not read as written:\n  "
            + "\n  ".join(problems)
        )


def _resolve_key(dotted: str) -> Key | None:
    """The :class:`Key` at a dotted path (None where DeepSpeed has no key there)."""
    section: dict[str, Key] | None = schema().top
    key = None
    for part in dotted.split("."):
        key = section.get(part) if section is not None else None
        if key is None:
            return None
        section = key.children
    return key


def _canonical_path(dotted: str) -> str | None:
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


def _default_text(canonical: str | None) -> str:
    key = _resolve_key(canonical) if canonical else None
    if key is None or key.default is _NO_DEFAULT:
        return ""
    return f" ({json.dumps(key.default, default=str)})"


# ---------------------------------------------------------------------------------------------
# Canonical names and defaults


def normalise(ds: dict) -> dict:
    """A copy with every key DeepSpeed knows under its canonical spelling (the pydantic alias, the
    long ``stage3_*`` names of the DeepSpeed docs and of Trainer's "auto" keys) and whole-number
    floats of integer keys as ints (1e9 -> 1000000000). Unknown keys are kept as they are."""

    def walk(node: dict, section: dict[str, Key] | None) -> dict:
        out = {}
        for name, value in node.items():
            key = section.get(name) if section is not None else None
            if key is None or key.deprecated or key.removed:
                out[name] = copy.deepcopy(value)
                continue
            if isinstance(value, dict) and key.children is not None:
                value = walk(value, key.children)
            elif key.is_int and isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                value = copy.deepcopy(value)
            out[key.name] = value
        return out

    return walk(ds, schema().top)


def get(ds: dict, dotted: str, default: Any = _NO_DEFAULT) -> Any:
    """The value of ``dotted`` (any spelling DeepSpeed accepts) in ``ds``, else DeepSpeed's default
    (from its pydantic models and AIO_DEFAULT_DICT); ``default`` where DeepSpeed has none to read."""
    canonical = _canonical_path(dotted)
    if canonical is None:
        raise KeyError(f"{dotted} is not a key DeepSpeed {schema().version} reads")
    node, last = _lookup(normalise(ds), canonical)
    if node is not None and last in node:
        return node[last]
    key = _resolve_key(canonical)
    if key is not None and key.default is not _NO_DEFAULT:
        return key.default
    if default is not _NO_DEFAULT:
        return default
    raise KeyError(f"{dotted} is not set and DeepSpeed {schema().version} has no default for it here")


# ---------------------------------------------------------------------------------------------
# Filling "auto"


def resolve_auto(
    ds: dict,
    *,
    hidden_size: int | None,
    training: dict,
    world_size: int,
    dtype: str,
    largest_tensor: int | None = None,
    nvme_dir: str | Path | None = None,
) -> dict:
    """A copy of ``ds`` with every ``"auto"`` filled as the run would fill it, or an error naming
    what could not be filled.

    Trainer's keys as HfTrainerDeepSpeedConfig fills them (:func:`trainer_values`,
    :func:`hidden_size_values`: reduce_bucket_size = hidden_size², stage3_prefetch_bucket_size =
    int(0.9 x hidden_size²), stage3_param_persistence_threshold = 10 x hidden_size); then what
    accelerate fills after Trainer: gradient_accumulation_steps = 1 where the key is missing
    (accelerate/utils/dataclasses.py DeepSpeedPlugin.__post_init__, line 1275) and
    stage3_gather_16bit_weights_on_model_save "auto" = false (accelerate/accelerator.py line 2225);
    then offloadbench's own: ``offload_param.buffer_size: "auto"`` = ``largest_tensor`` (elements of
    the model's largest tensor, memory.largest_tensor), and the ``nvme_path`` of every NVMe offload
    = ``nvme_dir`` resolved (train.load_deepspeed_config always put the run's folder there).
    ``dtype`` is the one the run trains in (env.choose_dtype: fp32 on a CPU-only machine).
    Fills only keys written exactly as Trainer spells them; :func:`check_keys` refuses the rest.
    """
    out = copy.deepcopy(ds)

    def fill(dotted: str, value: Any) -> None:  # HfTrainerDeepSpeedConfig.fill_match / fill_only
        node, last = _lookup(out, dotted)
        if node is not None and node.get(last) == "auto":
            node[last] = copy.deepcopy(value)

    for dotted, (value, _) in trainer_values(training, world_size, dtype).items():
        fill(dotted, value)
    hidden_keys = [k for k in hidden_size_values(1) if k in _auto_paths(out)]
    if hidden_keys and hidden_size is None:
        raise DeepSpeedConfigError(f'{", ".join(hidden_keys)} are "auto": they need the model\'s hidden_size')
    if hidden_size is not None:
        for dotted, value in hidden_size_values(hidden_size).items():
            fill(dotted, value)
    out.setdefault("gradient_accumulation_steps", 1)  # accelerate/utils/dataclasses.py line 1275
    fill(ACCELERATE_GATHER, False)  # accelerate/accelerator.py line 2225

    zero = out.get("zero_optimization") if isinstance(out.get("zero_optimization"), dict) else {}
    for section in ("offload_param", "offload_optimizer"):
        off = zero.get(section)
        if isinstance(off, dict) and off.get("device") == "nvme" and nvme_dir is not None:
            off["nvme_path"] = str(Path(nvme_dir).resolve())
    param = zero.get("offload_param")
    if isinstance(param, dict) and param.get("buffer_size") == "auto":
        if largest_tensor is None:
            raise DeepSpeedConfigError(
                'zero_optimization.offload_param.buffer_size is "auto": it needs the elements of the model\'s '
                "largest tensor (largest_tensor)"
            )
        param["buffer_size"] = int(largest_tensor)
    left = _auto_paths(out)
    if left:
        raise DeepSpeedConfigError(
            f'"auto" left unfilled at {", ".join(left)}'
            + (" (nvme_path needs the run's nvme_dir)" if any(p.endswith("nvme_path") for p in left) else "")
        )
    return out


# ---------------------------------------------------------------------------------------------
# Against the run

# DeepSpeed optimizer types that compute AdamW, what training.optimizer=adamw_torch trains with
# (deepspeed/runtime/engine.py _configure_basic_optimizer: "adam" is AdamW unless adam_w_mode is false).
_ADAMW_TYPES = {"adam", "adamw"}


def check_against_run(
    ds: dict, spec: dict, path: str | Path, *, dtype: str | None = None, device: str | None = None
) -> None:
    """Refuse settings of ``ds`` that contradict the run ``spec`` (config.run_spec), each with its fix.

    ``dtype`` / ``device``: what the run trains in and on (env.choose_dtype), once the hardware is
    known; without them, precision is checked only against an explicit training.dtype. Checked,
    with every problem in one message:

    - every key Trainer compares (fill_match) that is not "auto" must equal the run's value, as
      Trainer's own check at the start of training does: batch keys, gradient_clipping,
      optimizer.params, scheduler.params, fp16/bf16.enabled; a missing gradient_accumulation_steps
      is 1 (accelerate) and a missing gradient_clipping is 0 (DeepSpeed clips under ZeRO, not Trainer);
    - a scheduler block (DeepSpeed's schedule would replace training.lr_scheduler);
    - an optimizer block other than AdamW (Trainer then ignores training.optimizer), or none with
      offload_optimizer (DeepSpeed refuses Trainer's torch AdamW there unless
      zero_force_ds_cpu_optimizer is false), a paged optimizer;
    - mixed precision the run does not train in, or a bf16/fp16 run without that block;
    - parameter offload below ZeRO stage 3, NVMe offload without the run's nvme_dir (or not writable).
    """
    tr, ws, run = spec["training"], spec["world_size"], spec["run"]
    problems: list[str] = []
    if dtype is None and tr.get("dtype", "auto") != "auto":
        dtype = tr["dtype"]
    values = trainer_values(tr, ws, dtype or "fp32")
    batch = (
        f"(micro_batch_size={tr['micro_batch_size']} x gradient_accumulation_steps="
        f"{tr['gradient_accumulation_steps']} x world_size={ws})"
    )
    for key in (
        "train_batch_size",
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "gradient_clipping",
    ):
        expected = values[key][0]
        value = ds.get(key, "auto")
        if value != "auto" and value != expected:
            problems.append(
                f"run {run}: {path} sets {key}={value}, but the run trains with {key}={expected} {batch}; "
                'set it to "auto"'
            )
    if "gradient_accumulation_steps" not in ds and tr["gradient_accumulation_steps"] != 1:
        problems.append(
            f"run {run}: {path} has no gradient_accumulation_steps, so accelerate sets it to 1, but the run "
            f'accumulates {tr["gradient_accumulation_steps"]} micro-batches; set "gradient_accumulation_steps": "auto"'
        )
    if "gradient_clipping" not in ds and tr["max_grad_norm"]:
        problems.append(
            f"run {run}: {path} has no gradient_clipping, so DeepSpeed (which clips under ZeRO, not Trainer) does "
            f'not clip, but the run clips at max_grad_norm={tr["max_grad_norm"]}; set "gradient_clipping": "auto"'
        )
    if "train_batch_size" not in ds and "train_micro_batch_size_per_gpu" not in ds:
        problems.append(
            f'run {run}: {path} has neither train_batch_size nor train_micro_batch_size_per_gpu; set both to "auto"'
        )

    opt = ds.get("optimizer")
    if isinstance(opt, dict):
        params = opt.get("params") if isinstance(opt.get("params"), dict) else {}
        for name in ("lr", "betas", "eps", "weight_decay"):
            value, where = values[f"optimizer.params.{name}"]
            if name in params and params[name] != "auto" and params[name] != value:
                problems.append(
                    f"run {run}: {path} sets optimizer.params.{name}={json.dumps(params[name])}, but the run trains "
                    f'with {json.dumps(value)} ({where}); set it to "auto"'
                )
        kind = str(opt.get("type", ""))
        plain_adam = kind.lower() == "adam" and params.get("adam_w_mode") is False
        if kind.lower() not in _ADAMW_TYPES or plain_adam:
            problems.append(
                f"run {run}: {path} sets optimizer.type={kind}{' with adam_w_mode false' if plain_adam else ''}: "
                "with an optimizer block DeepSpeed builds the optimizer and Trainer ignores training.optimizer="
                f'{tr["optimizer"]} (AdamW); use "type": "AdamW" or remove the block'
            )
        if "max_grad_norm" in params:
            problems.append(
                f"run {run}: {path} sets optimizer.params.max_grad_norm, which DeepSpeed refuses; clipping is "
                'gradient_clipping ("auto": training.max_grad_norm)'
            )
    zero = ds.get("zero_optimization") if isinstance(ds.get("zero_optimization"), dict) else {}
    offload_opt = (zero.get("offload_optimizer") or {}).get("device", "none")
    if opt is None and offload_opt in ("cpu", "nvme") and ds.get("zero_force_ds_cpu_optimizer", True) is not False:
        problems.append(
            f"run {run}: {path} offloads the optimizer (offload_optimizer.device={offload_opt}) but has no optimizer "
            f"block, so Trainer builds training.optimizer={tr['optimizer']} (torch) and DeepSpeed refuses a torch "
            "optimizer with offload (deepspeed/runtime/engine.py, zero_force_ds_cpu_optimizer); add "
            '"optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", '
            '"weight_decay": "auto"}} (DeepSpeed\'s CPU Adam) or set "zero_force_ds_cpu_optimizer": false'
        )
    sched = ds.get("scheduler")
    if sched is not None:
        kind = sched.get("type") if isinstance(sched, dict) else sched
        problems.append(
            f"run {run}: {path} has a scheduler block ({json.dumps(kind)}): DeepSpeed's "
            f"schedule would replace training.lr_scheduler={tr['lr_scheduler']} with warmup_steps="
            f"{tr['warmup_steps']}; remove the block so Trainer builds the run's scheduler"
        )

    if dtype is not None:
        why = f"training.dtype={tr.get('dtype', 'auto')}" + (" on a machine without CUDA" if device == "cpu" else "")
        for name in ("fp16", "bf16"):
            block = ds.get(name)
            enabled = block.get("enabled", False) if isinstance(block, dict) else None
            if enabled is not None and enabled != "auto" and bool(enabled) != (dtype == name):
                problems.append(
                    f"run {run}: {path} sets {name}.enabled={json.dumps(enabled)}, but the run trains in {dtype} "
                    f'({why}); set it to "auto" (Trainer fills it from training.dtype)'
                )
            if dtype == name and not isinstance(block, dict):
                problems.append(
                    f"run {run}: {path} has no {name} block, so DeepSpeed would not train in {name} as the run does "
                    f'({why}); add "{name}": {{"enabled": "auto"}}'
                )

    for section in ("offload_param", "offload_optimizer"):
        off_device = (zero.get(section) or {}).get("device", "none")
        if section == "offload_param" and off_device != "none" and zero.get("stage") != 3:
            problems.append(
                f"run {run}: {path} offloads parameters (zero_optimization.offload_param) but sets "
                f"stage={zero.get('stage')}; parameter offload needs ZeRO stage 3"
            )
        if off_device == "nvme" and not spec.get("nvme_dir"):
            problems.append(f"run {run}: {path} offloads {section} to nvme; set nvme_dir in the run")
    if tr["optimizer"].startswith("paged_"):
        problems.append(
            f"run {run}: training.optimizer={tr['optimizer']} cannot be combined with "
            "deepspeed, which owns the optimizer (use offload_optimizer in the DeepSpeed config instead)"
        )
    if problems:
        raise DeepSpeedConfigError("\n".join(problems))
    if spec.get("nvme_dir") and any(
        (zero.get(s) or {}).get("device") == "nvme" for s in ("offload_param", "offload_optimizer")
    ):
        from .config import check_writable  # raises config.PreflightError

        check_writable(Path(spec["nvme_dir"]), f"run {run}: nvme_dir")


# ---------------------------------------------------------------------------------------------
# DeepSpeed's own parser


def validate(ds: dict, path: str | Path) -> None:
    """Run DeepSpeed's DeepSpeedConfig on a resolved config (values, types, batch arithmetic for
    one process); its error, naming ``path``, if it refuses it."""
    from deepspeed.runtime.config import DeepSpeedConfig

    try:
        DeepSpeedConfig(copy.deepcopy(ds))
    except Exception as err:  # pydantic ValidationError, AssertionError, DeepSpeedConfigError, ValueError
        raise DeepSpeedConfigError(f"DeepSpeed {schema().version} refuses {path}: {err}") from err
