"""Predicted peak memory of a run per device (GPU, host, NVMe), beside what the run measured.

The prediction counts tensors, from the model's config.json and the run spec, the way this
repository trains (src/offloadbench/train.py):

- weights: full loads the model in fp32 (bf16/fp16 on CUDA is autocast over fp32 master weights);
  lora loads the frozen base in the run's dtype (bf16/fp16 on CUDA, fp32 on CPU) and PEFT keeps
  the adapters in fp32; qlora stores the decoder's linear layers in 4-bit NF4 and, after
  prepare_model_for_kbit_training, everything else (embeddings, norms, lm_head) in fp32; ZeRO-3
  holds the model in the run's dtype, partitioned over the ranks, plus an fp32 master copy
  inside the optimizer.
- gradients: fp32 for the trainable parameters, the LoRA adapters included (in the model's
  dtype for ZeRO-3, plus the fp32 copy its optimizer steps on).
- optimizer: AdamW's two moments (fp32; 8-bit for paged_adamw_8bit).
- activations: what autograd keeps for backward, tensor by tensor, for one micro-batch through
  transformers' LlamaForCausalLM with SDPA attention, plus the loss gradient at the start of
  backward (see :func:`activation_bytes`; the CPU figures match torch's own count exactly,
  tests/test_memory.py).

Each component is placed where the run keeps it: on the GPU, in host memory (offloaded state,
DeepSpeed's pinned swap buffers, save_on_cpu activations) or in NVMe swap files. On a CPU-only
run everything that would be on the accelerator is in host memory: it is reported under host
and gpu is 0, so that the measured host RSS can be compared with it.

    python -m offloadbench.memory --spec <json or path> --model-config <config.json> --block-size N \
        --summary results/runs/<run>/summary.json --out results/memory/<run>.json
    python -m offloadbench.memory --hardware-table --config configs/paper.yaml \
        --model-config configs/models/llama-3.1-8b.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import declared_runs, load_config, load_spec, run_spec
from .io import write_json

GiB, MiB = 1024**3, 1024**2
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
COMPONENTS = ("weights", "gradients", "optimizer", "activations", "runtime")
DEVICES = ("gpu", "host", "nvme")

# The GPU class of the README's hardware table. These are assumptions for a model estimate, not
# measurements: no GPU run of the paper profile exists in this repository.
H100 = {
    "name": "NVIDIA H100 80GB HBM3 (SXM)",
    "memory_bytes": 81559 * MiB,  # nvidia-smi's total for this card; the CUDA context takes ~0.5 GiB of it
    "bf16_flops": 989e12,  # dense bf16 tensor-core peak, no sparsity
    "mfu": 0.40,  # assumed model-FLOPs utilisation of that peak
    "pcie_bytes_per_s": 50e9,  # host<->GPU, PCIe Gen5 x16 at ~80% of its 64 GB/s
    "nvme_bytes_per_s": 7e9,  # one PCIe Gen4 NVMe SSD, sequential reads and writes
}

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


# ---------------------------------------------------------------------------------------------
# The architecture


def arch(cfg: dict) -> dict:
    """The sizes of a Llama config.json that memory depends on."""
    h, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    hd = cfg.get("head_dim") or h // heads
    kv = cfg.get("num_key_value_heads") or heads
    return {
        "V": cfg["vocab_size"],
        "H": h,
        "I": cfg["intermediate_size"],
        "L": cfg["num_hidden_layers"],
        "heads": heads,
        "hd": hd,
        "q": heads * hd,  # width of q_proj's output and o_proj's input
        "kv": kv * hd,  # width of k_proj's and v_proj's outputs (grouped-query attention)
        "tied": bool(cfg.get("tie_word_embeddings", False)),
    }


def projections(a: dict) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each linear layer of one decoder layer."""
    return {
        "q_proj": (a["H"], a["q"]),
        "k_proj": (a["H"], a["kv"]),
        "v_proj": (a["H"], a["kv"]),
        "o_proj": (a["q"], a["H"]),
        "gate_proj": (a["H"], a["I"]),
        "up_proj": (a["H"], a["I"]),
        "down_proj": (a["I"], a["H"]),
    }


def param_counts(cfg: dict) -> dict:
    """Parameters by kind: no biases (Llama has none), two RMSNorms per layer and a final one."""
    a = arch(cfg)
    linear = a["L"] * sum(i * o for i, o in projections(a).values())
    counts = {
        "embed": a["V"] * a["H"],
        "linear": linear,  # the decoder layers' projections: what qlora stores in 4 bits
        "norms": (2 * a["L"] + 1) * a["H"],
        "lm_head": 0 if a["tied"] else a["V"] * a["H"],
    }
    counts["total"] = sum(counts.values())
    # Every tensor of the model in the order of model.parameters() without the norms, then the
    # norms (Trainer's optimizer groups: weights with decay, norms without); for DeepSpeed.
    counts["tensors"] = (
        [a["V"] * a["H"]]
        + [i * o for i, o in projections(a).values()] * a["L"]
        + ([] if a["tied"] else [a["V"] * a["H"]])
        + [a["H"]] * (2 * a["L"] + 1)
    )
    return counts


def lora_params(cfg: dict, lora: dict) -> int:
    """LoRA adds A (r x in) and B (out x r) to every targeted projection of every layer."""
    a = arch(cfg)
    proj = projections(a)
    n = a["L"] * sum(lora["r"] * (i + o) for name, (i, o) in proj.items() if name in lora["target_modules"])
    if "lm_head" in lora["target_modules"]:
        n += lora["r"] * (a["H"] + a["V"])
    return n


def nf4_bytes_per_param(double_quant: bool) -> float:
    """bitsandbytes 4-bit storage: two values per byte and one absmax per block of 64 values,
    fp32, or with double quantization uint8 plus one fp32 absmax per 256 of those."""
    return 0.5 + (1 / 64 + 4 / (64 * 256) if double_quant else 4 / 64)


def base_bytes(cfg: dict, spec: dict, p: dict) -> float:
    """The model's weights as train.py loads them, without adapters: p["base"] bytes each (fp32,
    or for lora the run's dtype), or for qlora the decoder's projections in NF4 and the rest
    (embedding, norms, lm_head) in fp32."""
    counts = param_counts(cfg)
    if spec["method"] != "qlora":
        return p["base"] * counts["total"]
    nf4 = nf4_bytes_per_param(spec["quantization"]["double_quant"])
    return counts["linear"] * nf4 + 4 * (counts["total"] - counts["linear"])


# ---------------------------------------------------------------------------------------------
# Precision and the DeepSpeed configuration


def precision(spec: dict, device: str, zero3: bool) -> dict:
    """Bytes per element of the tensors the activations are made of.

    - dtype auto: bf16 on CUDA (env.choose_dtype; every GPU class we name has bf16), fp32 on CPU.
    - The (non-quantized) weights of the base ("base"): fp32 for full and qlora
      (prepare_model_for_kbit_training makes them fp32), the run's dtype for lora (train.py loads
      the frozen base in it) and for ZeRO-3 (DeepSpeed holds the model itself in 16 bits). The
      residual stream, RMSNorm outputs and RoPE's cos/sin are in that dtype ("resid"): the
      embedding's output is, and each norm casts back to it.
    - Without DeepSpeed, Trainer autocasts a 16-bit run: matmul outputs and attention are in the
      16-bit dtype ("act"), and every autocast linear keeps 16-bit copies of its input and weight
      for backward where they are not 16-bit already (fp32 weights of full, of the LoRA adapters
      and of qlora's lm_head; none of a 16-bit lora base). ZeRO-3 does not autocast.
    - PEFT casts a LoRA adapter's input to the adapter weights' dtype ("adapter"): fp32, as
      get_peft_model keeps them (autocast_adapter_dtype), or 16 bits under ZeRO-3.
    - qlora: bitsandbytes' 4-bit layers return their input's dtype.
    """
    dtype = spec["training"]["dtype"]
    if dtype == "auto":
        dtype = "bf16" if device == "cuda" else "fp32"
    act = DTYPE_BYTES[dtype]
    qlora = spec["method"] == "qlora"
    base = act if not qlora and (zero3 or spec["method"] == "lora") else 4
    return {
        "dtype": dtype,
        "act": act,
        "base": base,
        "resid": base,
        "adapter": act if zero3 and not qlora else 4,
        "autocast": act < 4 and not zero3,
        "qlora": qlora,
        "cuda": device == "cuda",
    }


def read_deepspeed(spec: dict) -> dict | None:
    """The run's DeepSpeed JSON as written (no checks, no side effects: this is a prediction)."""
    path = spec.get("deepspeed")
    if not path:
        return None
    return json.loads(Path(path).read_text())


def zero3_settings(ds: dict | None, cfg: dict | None = None) -> dict | None:
    """Where ZeRO-3 keeps parameters and optimizer state, with DeepSpeed's defaults filled in
    ("buffer_size": "auto" is the model's largest tensor, which train.largest_parameter fills in from
    largest_tensor below)."""
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


def largest_tensor(cfg: dict | None) -> int:
    """Elements of a Llama's largest weight: the embedding / LM head, an MLP or the query projection
    (tests/test_memory.py checks it against a model built on the meta device)."""
    if cfg is None:
        raise ValueError('offload_param.buffer_size "auto" needs the model config')
    a = arch(cfg)
    return max(a["V"] * a["H"], a["I"] * a["H"], a["q"] * a["H"])


# ---------------------------------------------------------------------------------------------
# Activations


def layer_bytes_per_token(a: dict, spec: dict, p: dict) -> tuple[float, float]:
    """Bytes autograd keeps per token for one decoder layer, and those of them that are not kept
    in the first layer of a model whose inputs need no gradient (frozen embedding, no
    checkpointing: nothing before layer 0's first LoRA adapter requires grad).

    Per RMSNorm: its input upcast to fp32 and 1/rms (fp32), and the normalized input if the norm
    weight trains. Attention (SDPA, flash kernels): q, k, v after RoPE, its output (o_proj's
    input) and one fp32 logsumexp per head. MLP: gate_proj's output (silu's input), silu's output
    and up_proj's output (the product's inputs); the product (down_proj's input) only if
    down_proj trains. A linear layer keeps its input only if its weight trains (q/k/v share one
    input, gate/up another; under autocast each call keeps its own 16-bit copy). A LoRA adapter,
    whose input PEFT casts to the adapters' dtype first, keeps its dropout mask (bool on CUDA,
    the adapters' dtype on CPU), its dropout output (lora_A's input, a 16-bit copy of it under
    autocast) and lora_A's output (lora_B's input).
    """
    h, inter, act, res = a["H"], a["I"], p["act"], p["resid"]
    full = spec["method"] == "full"
    b = 2 * (4 * h + 4) + (2 * res * h if full else 0)
    b += act * (2 * a["q"] + 2 * a["kv"]) + 4 * a["heads"]
    mlp = res if p["qlora"] else act
    b += mlp * 3 * inter
    if full:
        copies = 5 if p["autocast"] else 2
        b += (act if p["autocast"] else res) * h * copies + act * inter
    lora, first = spec["lora"], 4 * h + 4
    for name, (fin, _) in projections(a).items():
        if spec["method"] == "full" or name not in lora["target_modules"]:
            continue
        mask = (1 if p["cuda"] else p["adapter"]) * fin if lora.get("dropout", 0) > 0 else 0
        keep = act if p["autocast"] else p["adapter"]
        b += mask + keep * (fin + lora["r"])
        if name in ("q_proj", "k_proj", "v_proj"):
            first += mask
    return b, first


def autocast_weight_copies(cfg: dict, spec: dict, p: dict) -> tuple[int, int, int]:
    """16-bit copies of the weights that autocast linears keep for backward: (per decoder layer,
    outside the layers, those of the per-layer ones the first layer of a frozen model does not
    keep: q/k/v and their lora_A see an input that needs no gradient there). Only fp32 weights are
    copied: the LoRA adapters, the base of full and qlora's lm_head; a 16-bit base (lora) is used
    as it is, and 4-bit layers keep none (bitsandbytes keeps the packed weight itself)."""
    if not p["autocast"]:
        return 0, 0, 0
    a, lora = arch(cfg), spec["lora"]
    proj = projections(a)
    qkv = ("q_proj", "k_proj", "v_proj")
    fp32_base = p["base"] > p["act"]
    base = 0 if p["qlora"] or not fp32_base else 1
    per_layer = base * sum(i * o for i, o in proj.values())
    first = base * sum(i * o for n, (i, o) in proj.items() if n in qkv)
    if spec["method"] != "full":
        per_layer += sum(lora["r"] * (i + o) for n, (i, o) in proj.items() if n in lora["target_modules"])
        first += sum(lora["r"] * i for n, (i, o) in proj.items() if n in lora["target_modules"] and n in qkv)
    # lm_head is never quantized (transformers keeps it in full precision): copied if it is fp32
    head = a["V"] * a["H"] if fp32_base else 0
    return per_layer * p["act"], head * p["act"], first * p["act"]


def activation_bytes(cfg: dict, spec: dict, p: dict, block_size: int) -> dict:
    """Activation memory of one micro-batch: what is saved for backward ("saved") and the peak
    during forward+backward ("peak": saved + the loss gradient, or with gradient checkpointing
    the layer inputs plus the larger of the head's backward and one recomputed layer)."""
    a = arch(cfg)
    tr = spec["training"]
    tokens = tr["micro_batch_size"] * block_size
    full = spec["method"] == "full"
    gc = tr["gradient_checkpointing"]
    layer, first = layer_bytes_per_token(a, spec, p)
    w_layer, w_head, w_first = autocast_weight_copies(cfg, spec, p)
    # After the layers: the final norm (as above), lm_head's input if lm_head trains, the fp32
    # log-probabilities cross_entropy keeps (transformers upcasts the logits), the labels (int64)
    # and, if the embedding trains, the input ids; RoPE's cos and sin (batch 1, shared by layers).
    per_token = 4 * a["H"] + 4 + 4 * a["V"] + 8
    if full:
        per_token += p["resid"] * a["H"] + (p["act"] if p["autocast"] else p["resid"]) * a["H"] + 8
    head = per_token * tokens + w_head + 4  # + the loss itself
    rope = 2 * block_size * a["hd"] * p["resid"]
    # Backward starts with the gradient of the log-probabilities and of the logits (fp32, t x V).
    loss_grad = 2 * 4 * a["V"] * tokens
    one_layer = layer * tokens + w_layer
    if gc:
        # Checkpointing keeps each layer's input (in the residual stream's dtype) and recomputes
        # one layer at a time in backward; its inputs require grad (enable_input_require_grads).
        checkpoints = a["L"] * p["resid"] * a["H"] * tokens
        saved = checkpoints + head
        peak = checkpoints + max(head + loss_grad, one_layer)
    else:
        frozen_input = not full  # nothing before layer 0 requires grad
        saved = a["L"] * one_layer + head + rope - ((first * tokens + w_first) if frozen_input else 0)
        peak = saved + loss_grad
    return {"saved": int(saved), "peak": int(peak), "one_layer": int(one_layer), "loss_grad": int(loss_grad)}


# ---------------------------------------------------------------------------------------------
# The prediction


def _ceil_div(n: int, k: int) -> int:
    return -(-n // k)


def _align(numel: int, alignment: int) -> int:
    return _ceil_div(numel, alignment) * alignment


def predict(spec: dict, model_config: dict, block_size: int, device: str) -> dict:
    """Predicted peak bytes per device and component for one rank of a run (host: per node)."""
    ds = read_deepspeed(spec)
    z3 = zero3_settings(ds, model_config)
    p = precision(spec, device, bool(z3))
    counts = param_counts(model_config)
    tr, method = spec["training"], spec["method"]
    ws, nodes = spec.get("world_size", 1), spec.get("num_nodes", 1)
    n_lora = lora_params(model_config, spec["lora"]) if method != "full" else 0
    trainable = counts["total"] if method == "full" else n_lora
    out = {d: dict.fromkeys(COMPONENTS, 0) for d in DEVICES}
    notes = []

    def put(where: str, component: str, nbytes: float) -> None:
        # A CPU-only run keeps what would be on the accelerator in host memory.
        out["host" if where == "gpu" and device == "cpu" else where][component] += int(nbytes)

    base = base_bytes(model_config, spec, p)
    acts = activation_bytes(model_config, spec, p, block_size)
    offload_acts = tr["activation_offload"] and device == "cuda"

    if z3 is None:
        put("gpu", "weights", base + 4 * n_lora)
        put("gpu", "gradients", 4 * trainable * (2 if ws > 1 else 1))  # DDP: a bucket copy of the gradients
        opt = tr["optimizer"]
        if opt == "paged_adamw_8bit" and device == "cuda":
            put("gpu", "optimizer", 2 * trainable + 2 * 4 * trainable / 256)  # uint8 moments, fp32 absmax per 256
        else:
            put("gpu", "optimizer", 8 * trainable)  # fp32 first and second moments
        if opt == "adamw_torch" and device == "cuda":
            put("gpu", "optimizer", 4 * trainable)  # foreach AdamW's temporary (sqrt of the second moment)
        if method in ("full", "lora") and device == "cuda":
            # from_pretrained builds the model on the CPU; Trainer then moves it to the GPU.
            put("host", "weights", base)
            loaded = "fp32" if p["base"] == 4 else p["dtype"]
            notes.append(f"host: the {loaded} model is built in host memory before Trainer moves it to the GPU")
        if device == "cpu" and opt.startswith("paged_"):
            notes.append(f"{opt}: bitsandbytes falls back to its non-paged optimizer on CPU (32-bit states counted)")
        elif opt.startswith("paged_"):
            notes.append(
                "paged optimizer state is CUDA managed memory, counted on the GPU: torch's allocated peak does "
                "not include it, NVML's used memory does"
            )
    else:
        _zero3(put, z3, model_config, spec, p, base, notes)

    if offload_acts:
        # save_on_cpu moves every saved tensor to pinned host memory after forward and back during
        # backward: the GPU holds one layer's tensors at a time plus the loss gradient.
        put("host", "activations", acts["saved"])
        put("gpu", "activations", max(acts["loss_grad"], acts["one_layer"]))
    else:
        put("gpu", "activations", acts["peak"])

    ranks_per_node = ws // nodes
    if ranks_per_node > 1:
        for c in COMPONENTS:
            out["host"][c] *= ranks_per_node
            out["nvme"][c] *= ranks_per_node
    for d in DEVICES:
        out[d]["total"] = sum(out[d][c] for c in COMPONENTS)

    nvme_per_step = nvme_written_per_step(z3, model_config, spec, p["act"]) * ranks_per_node
    return {
        "run": spec["run"],
        "method": method,
        "device": device,
        "dtype": p["dtype"],
        "predicted": out,
        "ranks_per_node": ranks_per_node,
        "params": {"total": counts["total"] + n_lora, "trainable": trainable},  # as train.count_params counts
        "activations": acts,
        "nvme_written": {
            "per_step": nvme_per_step,
            "steps": tr["max_steps"],
            "total": nvme_per_step * tr["max_steps"],
        },
        "assumptions": assumptions(spec, device, p, z3, block_size) + notes,
    }


def trainable_groups(cfg: dict, spec: dict) -> list[list[int]]:
    """Element counts of the trainable tensors in Trainer's optimizer groups: weights with decay
    (model order) and the norms without; for (Q)LoRA the adapters' A and B, one group."""
    counts, a = param_counts(cfg), arch(cfg)
    if spec["method"] == "full":
        return [[n for n in counts["tensors"] if n != a["H"]], [a["H"]] * (2 * a["L"] + 1)]
    lora = spec["lora"]
    per_layer = [n for name, (i, o) in projections(a).items() if name in lora["target_modules"] for n in (i, o)]
    head = [a["H"], a["V"]] if "lm_head" in lora["target_modules"] else []
    return [[lora["r"] * n for n in per_layer * a["L"] + head]]


def trainable_tensors(cfg: dict, spec: dict) -> list[int]:
    return [n for group in trainable_groups(cfg, spec) for n in group]


def _swappable_numel(tensors: list[int], ws: int, nbytes: int, min_aio_bytes: int) -> int:
    """Elements per rank in partitions DeepSpeed writes to NVMe (at least min_aio_bytes each)."""
    return sum(_ceil_div(n, ws) for n in tensors if _ceil_div(n, ws) * nbytes >= min_aio_bytes)


def _zero3(put, z3: dict, cfg: dict, spec: dict, p: dict, base: float, notes: list) -> None:
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
        files = _swappable_numel(frozen + trainable_tensors(cfg, spec), ws, cb, z3["min_aio_bytes"])
        flat, on_nvme = nvme_param_placement(trainable_groups(cfg, spec), ws, z3)
        small = sum(_ceil_div(n, ws) for n in on_nvme + frozen if _ceil_div(n, ws) * cb < z3["min_aio_bytes"])
        put("nvme", "weights", cb * files)
        put("host", "weights", cb * (flat + small))
        buffers = z3["param_buffer_count"] * _align(z3["param_buffer_size"], 1024 // cb) * cb
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
    bucket = z3["reduce_bucket_size"] if p["cuda"] else min(z3["reduce_bucket_size"], trainable)
    put("gpu", "gradients", bucket * cb)
    # Gradient partitions in the model's dtype: on the GPU, or on the host with optimizer offload.
    part = _ceil_div(trainable, ws)
    put("gpu" if z3["optimizer"] == "none" else "host", "gradients", part * cb)
    sub = min(part, z3["sub_group_size"])
    if z3["optimizer"] == "nvme":
        swapped = _swappable_numel(trainable_tensors(cfg, spec), ws, 4, z3["min_aio_bytes"])
        put("nvme", "optimizer", 12 * part)  # fp32 master, exp_avg, exp_avg_sq
        put("nvme", "gradients", 4 * swapped)  # fp32 gradients of the swappable partitions
        put("host", "gradients", 4 * (part - swapped))  # the others stay in memory
        put("host", "optimizer", z3["optimizer_buffer_count"] * _align(sub, 256) * 4)  # pinned swap buffers
    else:
        put(where[z3["optimizer"]], "optimizer", 12 * part)  # fp32 master, exp_avg, exp_avg_sq
        # The fp32 gradient the optimizer steps on: a flattened copy per sub-group on the GPU,
        # the master's .grad (the whole partition) with CPU offload.
        put(where[z3["optimizer"]], "gradients", 4 * (sub if z3["optimizer"] == "none" else part))


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
        out += 12 * _ceil_div(sum(tensors), ws) + 4 * _swappable_numel(tensors, ws, 4, z3["min_aio_bytes"])
    if z3["params"] == "nvme":
        on_nvme = nvme_param_placement(trainable_groups(cfg, spec), ws, z3)[1]
        out += cb * _swappable_numel(on_nvme, 1, cb, z3["min_aio_bytes"])
    return out


def assumptions(spec: dict, device: str, p: dict, z3: dict | None, block_size: int) -> list[str]:
    tr = spec["training"]
    out = [
        "bytes of tensors only: the allocator's slack (CUDA reserved vs allocated, glibc heap retention on CPU), "
        "the CUDA context and library workspaces are not predicted",
        f"activations of one micro-batch of {tr['micro_batch_size']} x {block_size} tokens, SDPA attention (q, k, "
        "v, output and logsumexp kept, no attention matrix); on CPU this count equals torch's saved tensors "
        "exactly (tests/test_memory.py), on CUDA dropout masks are assumed bool",
        "components are summed: buffers that exist only during the optimizer step are counted as if they "
        "coexisted with the activations",
    ]
    if device == "cpu":
        out.append(
            "CPU-only run: everything that would be on the accelerator is in host memory and reported under "
            f"host (gpu is 0); {p['dtype']} training"
        )
    elif p["autocast"] and p["base"] < 4:
        out.append(
            f"frozen base loaded in {p['dtype']}, LoRA adapters, their gradients and optimizer state in fp32; "
            f"{p['dtype']} autocast: 16-bit matmul outputs and residual stream, and 16-bit copies of the adapter "
            "weights kept for backward (counted under activations)"
        )
    elif p["autocast"]:
        out.append(
            f"{p['dtype']} autocast over fp32 weights: 16-bit matmul outputs, fp32 residual stream, and 16-bit "
            "copies of the linear weights kept for backward (counted under activations)"
        )
    if tr["gradient_checkpointing"]:
        out.append("gradient checkpointing: one input per layer kept, layers recomputed one at a time in backward")
    if tr["activation_offload"]:
        out.append(
            "activation_offload (save_on_cpu): saved tensors in pinned host memory; the GPU holds one layer's at a time"
            if device == "cuda"
            else "activation_offload on CPU: save_on_cpu keeps tensors where they are (no change)"
        )
    if z3 and p["qlora"] and device == "cuda":
        out.append(
            "qlora under ZeRO-3 on CUDA: no autocast; activations counted in the 16-bit dtype, though the fp32 "
            "weights prepare_model_for_kbit_training leaves may keep parts of them in fp32"
        )
    if z3:
        out.append(
            f"ZeRO-3 ({spec['world_size']} rank(s)): parameters {z3['params']}, optimizer {z3['optimizer']}; "
            "per-rank partitions, host and NVMe summed over the ranks of one node"
        )
        if z3["optimizer"] == "nvme":
            out.append(
                "nvme: predicted bytes are the swap files' size; nvme_written is what the run writes to them "
                "(compared with the measured nvme_bytes_written)"
            )
    return out


# ---------------------------------------------------------------------------------------------
# Disk: NVMe swap files and checkpoints (for the disk precheck)


def predicted_disk_bytes(spec: dict, model_config: dict, block_size: int, device: str) -> dict:
    """Disk a run needs at its peak: NVMe swap files (in spec.nvme_dir), the final model and the
    resume checkpoints Trainer keeps (save_total_limit=2, so three exist while a new one is being
    written), all in the run folder; tokenizer and config files (a few MB) are not counted."""
    pred = predict(spec, model_config, block_size, device)
    z3 = zero3_settings(read_deepspeed(spec), model_config)
    counts, p = param_counts(model_config), precision(spec, device, bool(z3))
    trainable = pred["params"]["trainable"]
    if spec["method"] != "full":
        final = 4 * trainable  # the LoRA adapter (fp32), not the base
    elif z3:
        final = p["act"] * counts["total"]  # stage3_gather_16bit_weights_on_model_save: the run's dtype
    else:
        final = 4 * counts["total"]  # the fp32 model Trainer trained
    optimizer_state = (12 if z3 else 8) * trainable  # DeepSpeed adds the fp32 master weights
    tr = spec["training"]
    kept = min(3, tr["max_steps"] // tr["save_steps"])
    nvme = pred["predicted"]["nvme"]["total"]
    return {
        "nvme_swap": nvme,
        "nvme_dir": spec.get("nvme_dir"),
        "final_model": final,
        "resume_checkpoint": final + optimizer_state,
        "resume_checkpoints_at_peak": kept,
        "total": nvme + final + kept * (final + optimizer_state),
        "nvme_written": pred["nvme_written"]["total"],
    }


# ---------------------------------------------------------------------------------------------
# DeepSpeed's own estimate


def meta_model(model_config: dict):
    """LlamaForCausalLM built on the meta device: shapes without memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in model_config.items() if not k.startswith("_")})
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


def deepspeed_estimate(spec: dict, model_config: dict, device: str = "cuda") -> dict | None:
    """DeepSpeed's ZeRO-3 model-states estimate for the run (None for runs without ZeRO-3).

    estimate_zero3_model_states_mem_needs_all_live(model) only prints a table, so this calls its
    building blocks: model_to_params on the model built on the meta device, then
    estimate_zero3_model_states_mem_needs with the run's offload settings. model_to_params
    de-duplicates shared parameters by data_ptr(), which is 0 for every meta tensor, so its total
    would be one tensor's size; the total is counted by parameter identity instead (the same
    de-duplication) and only largest_layer_params is taken from it.
    """
    z3 = zero3_settings(read_deepspeed(spec), model_config)
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


# ---------------------------------------------------------------------------------------------
# Prediction beside measurement


def compare(prediction: dict, summary: dict) -> dict:
    """The prediction with what summary.json measured and ratio = measured / predicted (null where
    either is missing). The measured runtime baseline (host RSS after imports, before the model
    loads) joins the predicted host figure as its runtime component when summary.json has it."""
    out = json.loads(json.dumps(prediction))
    host = out["predicted"]["host"]
    # Host memory is per node: the ranks that ran beside rank 0 (summary.json's ranks) add up.
    ranks = summary.get("ranks") or []
    local = [r for r in ranks if r.get("host") == ranks[0].get("host")] if len(ranks) > 1 else []
    baseline = summary.get("host_rss_baseline_bytes")
    measured_host = summary.get("host_rss_peak_bytes")
    if local:
        baseline = _sum_or_none(r.get("host_rss_baseline_bytes") for r in local)
        measured_host = _sum_or_none(r.get("host_rss_peak_bytes") for r in local)
        out["assumptions"].append(f"host measured: the sum of the peaks of the {len(local)} ranks on rank 0's node")
    if baseline is not None:
        host["runtime"] = int(baseline)
        host["total"] = sum(host[c] for c in COMPONENTS)
        out["assumptions"].append("host runtime: measured (summary.json host_rss_baseline_bytes), not predicted")
    else:
        out["assumptions"].append(
            "host runtime (Python, torch and libraries; ~0.5 GiB on CPU here) left out: summary.json has no "
            "host_rss_baseline_bytes, so the host ratio includes it"
        )
    measured = {
        "gpu": summary.get("gpu_allocated_peak_bytes"),
        "host": measured_host,
        "nvme": summary.get("nvme_bytes_written"),
    }
    expected = {
        "gpu": out["predicted"]["gpu"]["total"],
        "host": host["total"],
        # bytes written, not the swap files' size; rank 0 measures its own writes
        "nvme": out["nvme_written"]["total"] // max(1, out.get("ranks_per_node", 1)),
    }
    out["measured"] = measured
    out["measured_detail"] = {
        k: summary.get(k)
        for k in (
            "gpu_reserved_peak_bytes",
            "gpu_nvml_used_peak_bytes",
            "host_rss_baseline_bytes",
            "checkpoint_bytes",
            "params_total",
            "params_trainable",
            "status",
        )
    }
    out["ratio"] = {d: _ratio(measured[d], expected[d]) for d in DEVICES}
    if summary.get("device") and summary["device"] != out["device"]:
        out["assumptions"].append(f"predicted for {out['device']} but the run ran on {summary['device']}")
    return out


def _sum_or_none(values) -> int | None:
    values = list(values)
    return None if any(v is None for v in values) else sum(values)


def _ratio(measured, predicted) -> float | None:
    if measured is None or not predicted:
        return None
    return round(measured / predicted, 4)


# ---------------------------------------------------------------------------------------------
# Time on a GPU class (a model, not a measurement)


def estimate_time(spec: dict, model_config: dict, block_size: int, gpu: dict = H100) -> dict:
    """Seconds for the run's optimizer steps on one GPU of class ``gpu``: the larger of compute
    (FLOPs at the assumed MFU) and host/NVMe traffic (at the assumed bandwidths, fully overlapped).

    FLOPs per token: full fine-tuning 6N (forward 2N, backward 4N) plus attention 12·L·T·d
    (PaLM's count); LoRA and QLoRA 4N (no weight gradients for the frozen base) plus attention;
    gradient checkpointing adds one forward (2N + 4·L·T·d). N counts matmul weights (not the
    embedding). Not modelled: 4-bit dequantization, the optimizer step (CPU Adam for offloaded
    optimizer state), evaluation, loading and saving.
    """
    a, counts = arch(model_config), param_counts(model_config)
    tr, method = spec["training"], spec["method"]
    n = counts["total"] - counts["embed"] - counts["norms"] + (counts["embed"] if a["tied"] else 0)
    attn = 4 * a["L"] * block_size * a["q"]  # forward QK^T and AV per token
    per_token = (6 * n if method == "full" else 4 * n) + 3 * attn
    if tr["gradient_checkpointing"]:
        per_token += 2 * n + attn
    micro = tr["gradient_accumulation_steps"]
    tokens = tr["micro_batch_size"] * micro * block_size
    compute = per_token * tokens / (gpu["bf16_flops"] * gpu["mfu"])
    pcie = nvme = 0.0
    z3 = zero3_settings(read_deepspeed(spec), model_config)
    p = precision(spec, "cuda", bool(z3))
    trainable = counts["total"] if method == "full" else lora_params(model_config, spec["lora"])
    if z3:
        lp = base_bytes(model_config, spec, p) if p["qlora"] else p["act"] * counts["total"]
        passes = micro * (3 if tr["gradient_checkpointing"] else 2)  # forward, backward (and recompute)
        if z3["params"] != "none":
            pcie += passes * lp  # every pass gathers the parameters from the host
        if z3["optimizer"] != "none":
            pcie += micro * p["act"] * trainable + (0 if z3["params"] != "none" else lp)  # grads out, params back
        if z3["params"] == "nvme":  # what lives on NVMe is read into the pinned buffers every pass
            frozen = [] if method == "full" else counts["tensors"]
            on_nvme = nvme_param_placement(trainable_groups(model_config, spec), 1, z3)[1] + frozen
            nvme += passes * p["act"] * _swappable_numel(on_nvme, 1, p["act"], z3["min_aio_bytes"])
        written = nvme_written_per_step(z3, model_config, spec, p["act"])
        nvme += 2 * written  # read before the step, written after it
    if tr["activation_offload"]:
        acts = activation_bytes(model_config, spec, p, block_size)["saved"]
        pcie += 2 * micro * acts  # to the host after forward, back in backward
    times = {"compute": compute, "pcie": pcie / gpu["pcie_bytes_per_s"], "nvme": nvme / gpu["nvme_bytes_per_s"]}
    bound = max(times, key=times.get)
    return {
        "seconds": times[bound] * tr["max_steps"],
        "step_seconds": times[bound],
        "bound": bound,
        "flops_per_token": per_token,
        "tokens": tokens * tr["max_steps"],
        "gpu": gpu["name"],
        "assumptions": f"model estimate: {gpu['bf16_flops'] / 1e12:.0f} TFLOPS bf16 at {gpu['mfu']:.0%} MFU, "
        f"PCIe {gpu['pcie_bytes_per_s'] / 1e9:.0f} GB/s, NVMe {gpu['nvme_bytes_per_s'] / 1e9:.0f} GB/s",
    }


def _size(n: float) -> str:
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (1024, "KiB")):
        if n >= unit:
            return f"{n / unit:.1f} {name}" if unit == GiB else f"{n / unit:.0f} {name}"
    return "0" if n == 0 else f"{n:.0f} B"


def _duration(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else (f"{s / 60:.1f} min" if s >= 90 else f"{s:.0f} s")


def hardware_table(config: dict, model_config: dict, gpu: dict = H100) -> str:
    """Markdown: per run of a profile, predicted GPU, host, NVMe and disk needs and an estimated
    training time on one ``gpu``; a run whose GPU prediction exceeds the card is marked OOM."""
    rows, totals = [], {"host": 0, "gpu": 0, "final": 0, "disk": 0, "seconds": 0.0}
    for name in declared_runs(config):  # a sweep's points have other models: not this table
        spec = run_spec(config, name)
        block = spec.get("block_size") or config["dataset"]["block_size"]
        pred = predict(spec, model_config, block, "cuda")["predicted"]
        disk = predicted_disk_bytes(spec, model_config, block, "cuda")
        t = estimate_time(spec, model_config, block, gpu)
        fits = pred["gpu"]["total"] + 0.5 * GiB <= gpu["memory_bytes"]
        time = f"{_duration(t['seconds'])} ({t['bound']})" if fits else "— (does not fit: OOM expected)"
        rows.append(
            f"| {spec['run']} | {spec['method']} | {_size(pred['gpu']['total'])}{'' if fits else ' ✗'} | "
            f"{_size(pred['host']['total'])} | {_size(pred['nvme']['total'])} | {_size(disk['final_model'])} | "
            f"{_size(disk['total'])} | {time} |"
        )
        totals["gpu"] = max(totals["gpu"], pred["gpu"]["total"])
        totals["host"] = max(totals["host"], pred["host"]["total"])
        totals["final"] += disk["final_model"]
        totals["disk"] = max(totals["disk"], disk["total"] - disk["final_model"])
        totals["seconds"] += t["seconds"] if fits else 0
    steps, block = config["training"]["max_steps"], config["dataset"]["block_size"]
    head = [
        f"Predicted per run on one {gpu['name']} ({config['model']['name']}, block {block}, "
        f"{steps} optimizer steps). Memory is counted from the model config (python -m offloadbench.memory); "
        "time is a **model estimate, not a measurement**: "
        f"{gpu['bf16_flops'] / 1e12:.0f} TFLOPS bf16 at an assumed {gpu['mfu']:.0%} MFU, "
        f"PCIe {gpu['pcie_bytes_per_s'] / 1e9:.0f} GB/s, NVMe {gpu['nvme_bytes_per_s'] / 1e9:.0f} GB/s.",
        "",
        "| run | method | GPU (peak allocated) | host RAM (peak) | NVMe swap | final checkpoint | disk at peak | "
        "est. time on H100 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = (
        f"| **all runs** | | {_size(totals['gpu'])} (max) | {_size(totals['host'])} (max) | | "
        f"{_size(totals['final'])} (sum) | {_size(totals['final'] + totals['disk'])} | "
        f"{_duration(totals['seconds'])} (runs that fit) |"
    )
    foot = [
        "",
        "GPU: tensors only; add the CUDA context (~0.5 GiB) and allocator slack. Host: without the Python/torch "
        "runtime (~0.5 GiB on CPU). Disk at peak: NVMe swap + final model + the resume checkpoints kept while "
        "training; the all-runs line: every final model plus the largest transient of one run.",
    ]
    return "\n".join(head + rows + [total] + foot) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line


def load_model_config(ref: str, revision: str | None = None) -> dict:
    """A model's config.json as a dict: from a file, a model folder, or a hub id (AutoConfig; the
    training job has already put it in the Hugging Face cache)."""
    path = Path(ref)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return json.loads(path.read_text())
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref, revision=revision).to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="resolved run spec (JSON text or file)")
    parser.add_argument(
        "--model-config", required=True, help="the model's config.json, its folder, or a hub id (read from the cache)"
    )
    parser.add_argument("--revision", help="hub revision of --model-config")
    parser.add_argument("--block-size", type=int, help="tokens per training example (default: the spec's)")
    parser.add_argument("--summary", type=Path, help="the run's summary.json (measured values)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: the summary's device, else cpu")
    parser.add_argument("--out", type=Path, help="write the comparison JSON here")
    parser.add_argument("--hardware-table", action="store_true", help="print the Markdown table of --config's runs")
    parser.add_argument("--config", type=Path, help="profile merged onto configs/config.yaml (--hardware-table)")
    args = parser.parse_args(argv)
    model_config = load_model_config(args.model_config, args.revision)
    if args.hardware_table:
        config = load_config(*([args.config] if args.config else []))
        sys.stdout.write(hardware_table(config, model_config))
        return 0
    if not (args.spec and args.out):
        parser.error("--spec and --out are required (or --hardware-table)")
    spec = load_spec(args.spec)
    args.block_size = args.block_size or spec.get("block_size")
    if not args.block_size:
        parser.error("--block-size is required: the spec names none")
    summary = json.loads(args.summary.read_text()) if args.summary else {}
    device = args.device or summary.get("device") or "cpu"
    result = compare(predict(spec, model_config, args.block_size, device), summary)
    result["deepspeed_estimate"] = deepspeed_estimate(spec, model_config, device)
    result["disk"] = predicted_disk_bytes(spec, model_config, args.block_size, device)
    if summary.get("checkpoint_bytes") is not None:
        result["disk"]["final_model_measured"] = summary["checkpoint_bytes"]
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
