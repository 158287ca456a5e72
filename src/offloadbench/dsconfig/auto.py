"""Where "auto" is filled: what Trainer, accelerate and offloadbench put in each ``"auto"`` key.

:func:`trainer_values` and :func:`hidden_size_values` are the values Trainer compares and fills,
:data:`TRAINER_AUTO` and :data:`OFFLOADBENCH_AUTO` every dotted key whose "auto" the run fills, and
:func:`resolve_auto` fills them in a copy of a config.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from .errors import DeepSpeedConfigError
from .keytree import lookup

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


def auto_paths(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in auto_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix] if node == "auto" else []


def resolve_auto(
    ds: dict,
    *,
    hidden_size: int | None,
    training: dict,
    world_size: int,
    dtype: str | None,
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
    ``dtype`` is the one the run trains in (env.choose_dtype: fp32 on a CPU-only machine); None
    where the hardware is not known yet (offloadbench.resolve runs before the job is placed): then
    ``fp16.enabled`` / ``bf16.enabled`` stay "auto" for Trainer to fill on the machine it runs on.
    Fills only keys written exactly as Trainer spells them; :func:`check_keys` refuses the rest.
    """
    out = copy.deepcopy(ds)

    def fill(dotted: str, value: Any) -> None:  # HfTrainerDeepSpeedConfig.fill_match / fill_only
        node, last = lookup(out, dotted)
        if node is not None and node.get(last) == "auto":
            node[last] = copy.deepcopy(value)

    precision = ("fp16.enabled", "bf16.enabled")
    for dotted, (value, _) in trainer_values(training, world_size, dtype or "fp32").items():
        if dtype is not None or dotted not in precision:
            fill(dotted, value)
    hidden_keys = [k for k in hidden_size_values(1) if k in auto_paths(out)]
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
    left = [p for p in auto_paths(out) if dtype is not None or p not in precision]
    if left:
        raise DeepSpeedConfigError(
            f'"auto" left unfilled at {", ".join(left)}'
            + (" (nvme_path needs the run's nvme_dir)" if any(p.endswith("nvme_path") for p in left) else "")
        )
    return out
