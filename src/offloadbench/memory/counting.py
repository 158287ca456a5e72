"""Counting a Llama from its config.json: the architecture's sizes, parameters by kind, LoRA
adapters, NF4 storage, the largest tensor, the trainable tensors in Trainer's optimizer groups,
and the bytes autograd keeps for backward per micro-batch (activations). Also reading the model
config (load_model_config) and building the model on the meta device (meta_model), for the
tests and DeepSpeed's estimate. torch and transformers are imported only inside the functions
that need them.

The activation count follows transformers' LlamaForCausalLM with SDPA attention, as
src/offloadbench/train.py builds each run; on the CPU it equals torch's own count of saved
tensors exactly (tests/test_memory.py).
"""

from __future__ import annotations

import json
from pathlib import Path

# ---------------------------------------------------------------------------------------------
# The architecture and its parameters


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
    """The model's weights as train.py loads them, without adapters: the decoder's projections in
    p["proj"] bytes each (fp32 for full, the run's dtype for lora, NF4 for qlora) and the rest
    (embedding, norms, lm_head) in p["base"] bytes: fp32 for full, and for lora and qlora alike
    (prepare_model_for_kbit_training for qlora, train.py's upcast_non_projections for lora), the
    compute dtype under ZeRO-3 for full and lora and for qlora without prepare_model_for_kbit_training
    (quantization.prepare_kbit false, see predict.precision)."""
    counts = param_counts(cfg)
    proj = p.get("proj", p["base"])
    if spec["method"] == "qlora":
        proj = nf4_bytes_per_param(spec["quantization"]["double_quant"])
    return counts["linear"] * proj + p["base"] * (counts["total"] - counts["linear"])


def largest_tensor(cfg: dict | None) -> int:
    """Elements of a Llama's largest weight: the embedding / LM head, an MLP or the query projection
    (tests/test_memory.py checks it against a model built on the meta device)."""
    if cfg is None:
        raise ValueError('offload_param.buffer_size "auto" needs the model config')
    a = arch(cfg)
    return max(a["V"] * a["H"], a["I"] * a["H"], a["q"] * a["H"])


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
    copied: the LoRA adapters, the base of full and the fp32 lm_head of lora and qlora; 16-bit
    projections (lora) are used as they are, and 4-bit layers keep none (bitsandbytes keeps the
    packed weight itself)."""
    if not p["autocast"]:
        return 0, 0, 0
    a, lora = arch(cfg), spec["lora"]
    proj = projections(a)
    qkv = ("q_proj", "k_proj", "v_proj")
    fp32_base = p["base"] > p["act"]  # embedding, norms, lm_head
    base = 0 if p["qlora"] or not p.get("proj", p["base"]) > p["act"] else 1  # the projections
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
# The model: its config.json, and the model built on the meta device


def meta_model(model_config: dict):
    """LlamaForCausalLM built on the meta device: shapes without memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{k: v for k, v in model_config.items() if not k.startswith("_")})
    with torch.device("meta"):
        return LlamaForCausalLM(cfg)


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
