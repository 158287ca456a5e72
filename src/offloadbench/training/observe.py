"""What was in effect, read from the live objects after training: not what the config asked for.

A mechanism that fell back (bitsandbytes' paged optimizer on a CPU, activation offload on a
machine whose activations are in host memory anyway) is recorded as it ran, so the tables and the
claims never credit a mechanism that did not happen:

- the optimizer's class, and the bytes of its state that are paged (CUDA managed memory);
- for DeepSpeed runs, where the ZeRO-3 engine put parameters and optimizer state (its own flags)
  and the class of the optimizer that steps;
- the number of 4-bit base weights and their storage dtype on every QLoRA path (a ZeRO-3
  partitioned base must still be 4-bit);
- the dtypes the frozen base of a (Q)LoRA run holds: its projections and everything else;
- the bytes activation offload copied from an accelerator to the host.
"""

from __future__ import annotations

import torch

from .model import projection_modules


class ActivationCopies:
    """``save_on_cpu`` that counts what it moves: saved tensors go to host memory (pinned where an
    accelerator is), and ``bytes_to_host`` adds up those that were not there already. On a CPU
    nothing is moved: the tensors are in host memory from the start."""

    def __init__(self, pin_memory: bool):
        self.pin_memory = pin_memory
        self.bytes_to_host = 0
        self.tensors_saved = 0

    def _pack(self, tensor):
        self.tensors_saved += 1
        if tensor.device.type == "cpu":
            return tensor.device, tensor
        self.bytes_to_host += tensor.numel() * tensor.element_size()
        packed = torch.empty(tensor.size(), dtype=tensor.dtype, layout=tensor.layout, pin_memory=self.pin_memory)
        packed.copy_(tensor)
        return tensor.device, packed

    def _unpack(self, packed):
        device, tensor = packed
        return tensor.to(device, non_blocking=self.pin_memory)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)


def optimizer_in_effect(trainer) -> dict:
    """The optimizer that stepped: its class and, for bitsandbytes, how much of its state is paged."""
    opt = trainer.optimizer
    while hasattr(opt, "optimizer") and opt.optimizer is not opt:  # accelerate / DeepSpeed wrappers
        opt = opt.optimizer
    state_bytes = paged_bytes = 0
    for state in getattr(opt, "state", {}).values():
        for value in state.values() if isinstance(state, dict) else ():
            if torch.is_tensor(value):
                nbytes = value.numel() * value.element_size()
                state_bytes += nbytes
                paged_bytes += nbytes if getattr(value, "is_paged", False) else 0
    return {
        "class": f"{type(opt).__module__}.{type(opt).__qualname__}",
        "paged_requested": bool(getattr(opt, "is_paged", False)),
        "state_bytes": state_bytes,
        "paged_state_bytes": paged_bytes,
    }


def zero_placement(trainer) -> dict | None:
    """Where the DeepSpeed engine keeps parameters and optimizer state (ZeRO-3's own flags, set
    from the config it parsed: deepspeed/runtime/zero/stage3.py, _configure_offloading)."""
    engine = trainer.model_wrapped
    zero = getattr(engine, "optimizer", None)
    if not hasattr(engine, "zero_optimization_stage") or zero is None:
        return None
    inner = getattr(zero, "optimizer", None)
    return {
        "stage": int(engine.zero_optimization_stage()),
        "params": "nvme" if getattr(zero, "params_in_nvme_and_cpu", False) else _offloaded(zero, "offload_param"),
        "optimizer": "nvme" if getattr(zero, "swap_optimizer", False) else _offloaded(zero, "offload_optimizer"),
        "optimizer_class": f"{type(inner).__module__}.{type(inner).__qualname__}" if inner is not None else None,
    }


def _offloaded(zero, flag: str) -> str:
    return "cpu" if getattr(zero, flag, False) else "none"


def four_bit_weights(model) -> dict:
    """How many base weights are 4-bit (bitsandbytes Params4bit) and how they are stored."""
    n, dtypes = 0, set()
    for p in model.parameters():
        if type(p).__name__ == "Params4bit" or getattr(p, "quant_state", None) is not None:
            n += 1
            stored = getattr(p, "ds_tensor", None)
            dtypes.add(str((stored if stored is not None else p).dtype).removeprefix("torch."))
    return {"count": n, "storage_dtypes": sorted(dtypes)}


def _stored_dtype(p) -> str:
    if type(p).__name__ == "Params4bit" or getattr(p, "quant_state", None) is not None:
        qs = getattr(p, "quant_state", None)
        return getattr(qs, "quant_type", None) or getattr(p, "quant_type", None) or "4bit"
    return str(p.dtype).removeprefix("torch.")


def base_dtypes(model) -> dict:
    """The dtypes the frozen base holds, read from the live model: its decoder projections (the
    linear layers QLoRA quantizes: "nf4" / "fp4" where they are 4-bit) and everything else of the
    base (embeddings, norms, lm_head); the LoRA adapters are not counted. Several dtypes of one
    kind are joined with "+"; a ZeRO-3 partitioned parameter reports the dtype it is held in."""

    proj_modules = projection_modules(model)
    proj_ids = {id(p) for m in proj_modules.values() for p in m.parameters(recurse=False)}
    kinds: dict[str, set] = {"projections": set(), "other": set()}
    for name, p in model.named_parameters():
        if any(part.startswith("lora_") for part in name.split(".")):
            continue
        kinds["projections" if id(p) in proj_ids else "other"].add(_stored_dtype(p))
    return {k: "+".join(sorted(v)) if v else None for k, v in kinds.items()}


def observed(spec: dict, trainer, model, copies: ActivationCopies | None) -> dict:
    """summary.json's ``observed``: the mechanisms as they ran, and where each kind of state lived."""
    opt = optimizer_in_effect(trainer)
    zero = zero_placement(trainer)
    where = {
        "params": zero["params"] if zero else "none",
        "optimizer": zero["optimizer"] if zero else "none",
        "activations": "cpu" if copies is not None and copies.bytes_to_host > 0 else "none",
    }
    if opt["paged_state_bytes"] > 0:
        where["optimizer"] = "paged"
    notes = {}
    if spec["training"]["optimizer"].startswith("paged_") and where["optimizer"] != "paged":
        notes["optimizer"] = "not paged (no CUDA)" if not torch.cuda.is_available() else "not paged"
    if copies is not None and copies.bytes_to_host == 0:
        notes["activations"] = "no copy (already in host memory)"
    return {
        "offload": where,
        "notes": notes,
        "optimizer": opt,
        "zero": zero,
        "four_bit": four_bit_weights(model) if spec["method"] == "qlora" else None,
        "base_dtypes": base_dtypes(model) if spec["method"] in ("lora", "qlora") else None,
        "activation_bytes_to_host": copies.bytes_to_host if copies is not None else None,
    }
