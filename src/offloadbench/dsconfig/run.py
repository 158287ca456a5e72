"""Checks of a config against the run: :func:`check_against_run` (the run's spec), :func:`validate`
(DeepSpeed's own parser) and :func:`check_writable` (a folder the run will write to)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from .auto import trainer_values
from .errors import DeepSpeedConfigError
from .keytree import schema

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
        check_writable(Path(spec["nvme_dir"]), f"run {run}: nvme_dir")


def check_writable(path: Path, what: str, error: type[Exception] = DeepSpeedConfigError) -> None:
    """``path`` can be created or written: its nearest existing ancestor is a writable folder.

    Raises ``error`` (config passes its PreflightError) naming ``what``, ``path`` and the ancestor."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise error(f"{what}: {path} is not writable ({existing} is not a writable folder)")


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
