"""DeepSpeed ZeRO-3 as the memory model sees it: the run's DeepSpeed settings with DeepSpeed's
defaults filled in (zero3_settings, DS_DEFAULTS: deepspeed/runtime/zero/config.py,
offload_config.py, swap_tensor/constants.py), where ZeRO-3 places parameters, gradients and
optimizer state per rank (zero3_placement: deepspeed/runtime/zero/stage3.py, runtime/swap_tensor/),
which trainable partitions live in pinned host buffers or on NVMe with offload_param nvme
(nvme_param_placement: DeepSpeed 0.19.8, stage3.py _create_param_groups_fp16_flat_cpu_memory and
_create_fp16_partitions_with_defragmentation), the bytes written to NVMe per optimizer step
(nvme_written_per_step), and DeepSpeed's own model-states estimate (deepspeed_estimate:
deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs). deepspeed and torch are
imported only inside deepspeed_estimate.
"""

from __future__ import annotations

import os

from .. import dsconfig
from .counting import largest_tensor, lora_params, meta_model, param_counts, trainable_groups, trainable_tensors
from .units import GiB, MiB

# DeepSpeed's defaults for what our configs leave unset (deepspeed/runtime/zero/config.py,
# offload_config.py, swap_tensor/constants.py), read by :func:`zero3_settings`.
DS_DEFAULTS = {
    "reduce_bucket_size": int(5e8),
    "sub_group_size": int(1e9),
    "param_buffer_count": 5,
    "param_buffer_size": int(1e8),
    "max_in_cpu": int(1e9),
    "optimizer_buffer_count": 4,
    "aio_block_size": 1048576,
}


def read_deepspeed(spec: dict, model_config: dict) -> dict | None:
    """The run's DeepSpeed config as DeepSpeed gets it: the resolved one of a resolved spec
    (offloadbench.resolve), else the JSON with its "auto" values filled the same way
    (dsconfig.resolve_auto); every key under its canonical name. No side effects: a prediction."""
    if "deepspeed_config" in spec:
        ds = spec["deepspeed_config"]
    elif spec.get("deepspeed"):
        ds = resolved_deepspeed(spec, model_config, spec.get("nvme_dir") or ".")
    else:
        return None
    return dsconfig.normalise(ds) if ds is not None else None


def resolved_deepspeed(spec: dict, model_config: dict, nvme_path) -> dict:
    """The run's DeepSpeed JSON with every "auto" filled for this model (dsconfig.resolve_auto;
    offload_param.buffer_size: the largest tensor) and ``nvme_path`` for the NVMe offloads;
    fp16/bf16.enabled stay "auto" for Trainer to fill on the machine the job runs on."""
    return dsconfig.resolve_auto(
        dsconfig.read(spec["deepspeed"]),
        hidden_size=model_config.get("hidden_size"),
        training=spec["training"],
        world_size=spec["world_size"],
        dtype=None,
        largest_tensor=largest_tensor(model_config),
        nvme_dir=nvme_path,
    )


def zero3_settings(ds: dict | None, cfg: dict | None = None) -> dict | None:
    """Where ZeRO-3 keeps parameters and optimizer state, with DeepSpeed's defaults filled in
    ("buffer_size": "auto" is the model's largest tensor, counting.largest_tensor, which
    read_deepspeed has already filled in for a resolved or a raw spec)."""
    zero = (ds or {}).get("zero_optimization") or {}
    if zero.get("stage") != 3:
        return None
    op, oo, aio = zero.get("offload_param") or {}, zero.get("offload_optimizer") or {}, (ds or {}).get("aio") or {}
    d = DS_DEFAULTS
    return {
        "params": op.get("device", "none"),
        "optimizer": oo.get("device", "none"),
        "reduce_bucket_size": int(zero.get("reduce_bucket_size", d["reduce_bucket_size"])),
        "sub_group_size": int(zero.get("sub_group_size", d["sub_group_size"])),
        "param_buffer_count": int(op.get("buffer_count", d["param_buffer_count"])),
        "param_buffer_size": largest_tensor(cfg)
        if op.get("buffer_size") == "auto"
        else int(op.get("buffer_size", d["param_buffer_size"])),
        "max_in_cpu": int(op.get("max_in_cpu", d["max_in_cpu"])),
        "optimizer_buffer_count": int(oo.get("buffer_count", d["optimizer_buffer_count"])),
        # DeepSpeed swaps a tensor only if it has at least this many bytes; smaller ones stay in memory.
        "min_aio_bytes": max(MiB, int(aio.get("block_size", d["aio_block_size"]))),
    }


# ---------------------------------------------------------------------------------------------
# Placement per rank (deepspeed/runtime/zero/stage3.py, runtime/swap_tensor/)


def _ceil_div(n: int, k: int) -> int:
    return -(-n // k)


def _align(numel: int, alignment: int) -> int:
    return _ceil_div(numel, alignment) * alignment


def swappable_numel(tensors: list[int], ws: int, nbytes: int, min_aio_bytes: int) -> int:
    """Elements per rank in partitions DeepSpeed writes to NVMe (at least min_aio_bytes each)."""
    return sum(_ceil_div(n, ws) for n in tensors if _ceil_div(n, ws) * nbytes >= min_aio_bytes)


def param_swap_buffers(z3: dict, cb: int) -> int:
    """Bytes of the parameter swapper's pinned buffers (offload_param nvme), elements of cb bytes."""
    return z3["param_buffer_count"] * _align(z3["param_buffer_size"], 1024 // cb) * cb


def optimizer_swap_buffers(z3: dict, part: int) -> int:
    """Bytes of the optimizer swapper's pinned fp32 buffers (offload_optimizer nvme), for a rank's
    partition of ``part`` trainable elements: one sub-group each."""
    return z3["optimizer_buffer_count"] * _align(min(part, z3["sub_group_size"]), 256) * 4


def zero3_placement(put, z3: dict, cfg: dict, spec: dict, p: dict, base: float, notes: list) -> None:
    """ZeRO-3 placement per rank (deepspeed/runtime/zero/stage3.py, runtime/swap_tensor/)."""
    ws, counts = spec.get("world_size", 1), param_counts(cfg)
    n_lora = lora_params(cfg, spec["lora"]) if spec["method"] != "full" else 0
    trainable = n_lora or counts["total"]
    cb = p["act"]  # the dtype DeepSpeed holds parameters and their gradients in
    # Partitioned parameters. qlora: the packed 4-bit weights are stored in the compute dtype
    # (bnb_4bit_quant_storage), so their bytes are what is partitioned.
    lp = (base if p["qlora"] else cb * counts["total"]) + cb * n_lora
    where = {"none": "gpu", "cpu": "host", "nvme": "nvme"}
    if z3["params"] == "nvme":
        # zero.Init writes every partition of at least min_aio_bytes to a swap file (the files stay);
        # smaller ones stay in memory. The optimizer then moves trainable sub-groups that fit in
        # max_in_cpu elements into pinned host buffers for good (nvme_param_placement).
        frozen = [] if spec["method"] == "full" else counts["tensors"]
        files = swappable_numel(frozen + trainable_tensors(cfg, spec), ws, cb, z3["min_aio_bytes"])
        flat, on_nvme = nvme_param_placement(trainable_groups(cfg, spec), ws, z3)
        small = sum(_ceil_div(n, ws) for n in on_nvme + frozen if _ceil_div(n, ws) * cb < z3["min_aio_bytes"])
        put("nvme", "weights", cb * files)
        put("host", "weights", cb * (flat + small))
        buffers = param_swap_buffers(z3, cb)
        put("host", "weights", buffers)
        notes.append(
            f"offload_param nvme: {z3['param_buffer_count']} pinned swap buffers of {z3['param_buffer_size']:.0e} "
            f"elements in host memory ({buffers / GiB:.2f} GiB), and pinned buffers for up to max_in_cpu "
            f"({z3['max_in_cpu']:.0e}) trainable elements"
        )
    else:
        put(where[z3["params"]], "weights", lp / ws)
    # The module being computed and the one prefetched, gathered whole on the GPU, and (full
    # fine-tuning) the full-size gradient of one module before it is reduce-scattered.
    largest = max(counts["tensors"])
    put("gpu", "weights", 2 * largest * cb)
    if spec["method"] == "full":
        put("gpu", "gradients", largest * cb)
    # Reduce bucket (contiguous_gradients): allocated whole on a GPU; on a CPU only written pages count.
    filled = min(z3["reduce_bucket_size"], trainable)
    put("gpu", "gradients", (z3["reduce_bucket_size"] if p["cuda"] else filled) * cb)
    # Reducing the bucket at the end of backward: reduce_scatter_coalesced (runtime/comm/
    # coalesced_collectives.py) concatenates its gradients into a new flat tensor, and on a CPU gloo's
    # reduce-scatter copies that once more; NCCL reduces in place. Transient: with optimizer offload
    # the run's peak (on the CPU the memory-scale runs, two fp32 copies of their 103 M gradients above
    # what backward leaves behind; docs/memory-model.md). Without offload see zero3_step_transient.
    copies = filled * cb * (1 if p["cuda"] else 2)
    # Gradient partitions in the model's dtype: on the GPU, or on the host with optimizer offload.
    part = _ceil_div(trainable, ws)
    put("gpu" if z3["optimizer"] == "none" else "host", "gradients", part * cb)
    sub = min(part, z3["sub_group_size"])
    step_grad, step_temp = (
        zero3_step_transient(spec["training"]["optimizer"], sub, p["cuda"]) if z3["optimizer"] == "none" else (0, 0)
    )
    if step_grad + step_temp > copies:  # the run peaks in whichever phase holds more
        put("gpu", "gradients", step_grad)
        put("gpu", "optimizer", step_temp)
    else:
        put("gpu", "gradients", copies)
    if z3["optimizer"] == "nvme":
        swapped = swappable_numel(trainable_tensors(cfg, spec), ws, 4, z3["min_aio_bytes"])
        put("nvme", "optimizer", 12 * part)  # fp32 master, exp_avg, exp_avg_sq
        put("nvme", "gradients", 4 * swapped)  # fp32 gradients of the swappable partitions
        put("host", "gradients", 4 * (part - swapped))  # the others stay in memory
        put("host", "optimizer", optimizer_swap_buffers(z3, part))  # pinned swap buffers
    else:
        put(where[z3["optimizer"]], "optimizer", 12 * part)  # fp32 master, exp_avg, exp_avg_sq
        if z3["optimizer"] == "cpu":  # the fp32 gradient it steps on: the master's .grad, held throughout
            put("host", "gradients", 4 * part)


def zero3_step_transient(optimizer: str, sub: int, cuda: bool) -> tuple[int, int]:
    """Bytes ZeRO-3 without optimizer offload adds inside its optimizer step, after backward's copies
    are freed: the fp32 gradient the optimizer steps on, which DeepSpeed flattens from the
    sub-group's gradient partitions there (stage3.py _prepare_fp32_grad_for_sub_group), and torch
    AdamW's temporaries the size of it: tensor by tensor on a CPU two (exp_avg_sq.sqrt() and its
    division by the bias correction), foreach on a GPU one (the sqrt), the fused kernel none.
    Traced on the CPU (docs/memory-model.md): `zero3` at memory scale peaks in this step with
    adamw_torch, in backward with adamw_torch_fused."""
    temporaries = 0 if optimizer == "adamw_torch_fused" else (1 if cuda else 2)
    return 4 * sub, temporaries * 4 * sub


def nvme_param_placement(groups: list[list[int]], ws: int, z3: dict) -> tuple[int, list[int]]:
    """Where ZeRO-3 keeps trainable parameter partitions with offload_param nvme (DeepSpeed 0.19.8,
    stage3.py _create_param_groups_fp16_flat_cpu_memory and _create_fp16_partitions_with_defragmentation):
    each optimizer group gets a pinned host buffer for what is left of max_in_cpu elements; a
    sub-group (partitions gathered until sub_group_size) lives there if it fits whole, else on NVMe.
    Returns (elements of the pinned buffers, per-rank sizes of the partitions on NVMe)."""
    budget, flat, on_nvme = z3["max_in_cpu"], 0, []
    for group in groups:
        parts = [_ceil_div(n, ws) for n in group]
        buffer = min(sum(parts), max(0, budget))
        budget -= sum(parts)
        flat += buffer
        offset, sub = 0, []
        for i, n in enumerate(parts):
            sub.append(n)
            if sum(sub) >= z3["sub_group_size"] or i == len(parts) - 1:
                if offset + sum(sub) > buffer:
                    on_nvme += sub
                offset += sum(sub)
                sub = []
    return flat, on_nvme


def locked_swap_bytes(z3: dict | None, cfg: dict, spec: dict, cb: int) -> int:
    """Host bytes one rank's NVMe swappers lock with mlock while DeepSpeed sets up (0.19.8: the
    parameter swapper's buffers, partitioned_param_swapper.py, and the optimizer swapper's
    SwapBufferManager, swap_tensor/utils.py, both from the aio handle's new_cpu_locked_tensor, which
    locks whatever pin_memory says). A lower bound: swap-out buffers come on top."""
    if not z3:
        return 0
    out = 0
    if z3["params"] == "nvme":
        out += param_swap_buffers(z3, cb)
    if z3["optimizer"] == "nvme":
        n_lora = lora_params(cfg, spec["lora"]) if spec["method"] != "full" else 0
        part = _ceil_div(n_lora or param_counts(cfg)["total"], spec.get("world_size", 1))
        out += optimizer_swap_buffers(z3, part)
    return out


def nvme_written_per_step(z3: dict | None, cfg: dict, spec: dict, cb: int) -> int:
    """Bytes DeepSpeed writes to NVMe per optimizer step and rank: the fp32 optimizer state
    (master, exp_avg, exp_avg_sq) after the step, the fp32 gradients of the swappable partitions
    at the accumulation boundary, and the updated parameters of sub-groups that live on NVMe.
    (DeepSpeed 0.19.8, default profile's zero3_offload_nvme on CPU: 26 228 224 bytes predicted
    per step, 26 230 477 measured, 1 049 219 072 bytes in 40 steps.)"""
    if not z3:
        return 0
    ws, tensors = spec.get("world_size", 1), trainable_tensors(cfg, spec)
    out = 0
    if z3["optimizer"] == "nvme":
        out += 12 * _ceil_div(sum(tensors), ws) + 4 * swappable_numel(tensors, ws, 4, z3["min_aio_bytes"])
    if z3["params"] == "nvme":
        on_nvme = nvme_param_placement(trainable_groups(cfg, spec), ws, z3)[1]
        out += cb * swappable_numel(on_nvme, 1, cb, z3["min_aio_bytes"])
    return out


# ---------------------------------------------------------------------------------------------
# DeepSpeed's own estimate


def deepspeed_estimate(spec: dict, model_config: dict, device: str = "cuda") -> dict | None:
    """DeepSpeed's ZeRO-3 model-states estimate for the run (None for runs without ZeRO-3).

    estimate_zero3_model_states_mem_needs_all_live(model) only prints a table, so this calls its
    building blocks: model_to_params on the model built on the meta device, then
    estimate_zero3_model_states_mem_needs with the run's offload settings. model_to_params
    de-duplicates shared parameters by data_ptr(), which is 0 for every meta tensor, so its total
    would be one tensor's size; the total is counted by parameter identity instead (the same
    de-duplication) and only largest_layer_params is taken from it.
    """
    z3 = zero3_settings(read_deepspeed(spec, model_config), model_config)
    if z3 is None:
        return None
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if _has_cuda() else "cpu")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs, model_to_params

    model = meta_model(model_config)
    _, largest = model_to_params(model)
    total = sum({id(p): p.numel() for p in model.parameters()}.values())
    ws, nodes = spec.get("world_size", 1), spec.get("num_nodes", 1)
    args = {
        "total_params": total,
        "largest_layer_params": largest,
        "num_gpus_per_node": ws // nodes,
        "num_nodes": nodes,
        "cpu_offload": z3["optimizer"] != "none",
        "cpu_offload_params": z3["params"] != "none",
        "zero_init": True,  # Trainer builds ZeRO-3 models under zero.Init
        "additional_buffer_factor": 1.5,
    }
    cpu_bytes, gpu_bytes, _ = estimate_zero3_model_states_mem_needs(**args)
    return {
        "function": "deepspeed.runtime.zero.stage3.estimate_zero3_model_states_mem_needs",
        "arguments": args,
        "gpu_bytes": int(gpu_bytes),
        "host_bytes": int(cpu_bytes),
        "notes": [
            "model states only (parameters, gradients, optimizer), no activations, buffers or swap files",
            "every parameter counted as trainable with mixed-precision Adam (the unquantized model for qlora)",
            "offload to nvme is passed as cpu offload: the estimator has no nvme case",
            "largest_layer_params from deepspeed's model_to_params; total_params by parameter identity",
        ]
        + (
            ["CPU-only run: DeepSpeed's GPU is its CPU accelerator, so both figures are host memory"]
            * (device == "cpu")
        ),
    }


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False
