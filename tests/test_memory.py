"""The memory model's counts against hand-worked examples and torch's own count of saved tensors:
parameters, LoRA adapters, the largest tensor and the activations autograd keeps for backward
(the memory model's assumptions and the README cite this file). No training: models are built on
the meta device or run one forward pass of a two-layer model on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ATTN, LORA_TWO, MLP, N_TWO, REPO, TWO, spec_for

from offloadbench.memory.counting import (
    activation_bytes,
    arch,
    largest_tensor,
    layer_bytes_per_token,
    lora_params,
    meta_model,
    param_counts,
)
from offloadbench.memory.predict import precision


def test_parameter_counts_by_hand_match_llama_on_the_meta_device():
    assert N_TWO == 139_584 and LORA_TWO == 3_584
    counts = param_counts(TWO)
    assert counts["total"] == N_TWO
    assert counts["linear"] == 2 * (ATTN + MLP) and counts["norms"] == 5 * 64
    assert sum(counts["tensors"]) == N_TWO
    assert sum(p.numel() for p in meta_model(TWO).parameters()) == N_TWO
    assert lora_params(TWO, {"r": 8, "target_modules": ["q_proj", "v_proj"]}) == LORA_TWO


def test_llama_3_1_8b_has_8_03_billion_parameters():
    cfg = json.loads((REPO / "configs" / "models" / "llama-3.1-8b.json").read_text())
    embed = 128256 * 4096  # 525 336 576
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # 218 112 000
    total = embed + 32 * layer + 4096 + embed
    assert total == 8_030_261_248
    assert param_counts(cfg)["total"] == total
    assert sum(p.numel() for p in meta_model(cfg).parameters()) == total
    assert lora_params(cfg, {"r": 8, "target_modules": ["q_proj", "v_proj"]}) == 32 * 8 * (8192 + 5120)


def test_full_fine_tuning_activations_by_hand(config):
    spec = spec_for(config, "full", micro_batch_size=2)
    p = precision(spec, "cpu", zero3=False)
    # Per token of one layer (fp32): two RMSNorms keep their input and 1/rms (2 x (4*64 + 4)) and
    # the normalized input (2 x 4*64); attention q, k, v, output 4*(64+32+32+64) and logsumexp 4*4;
    # MLP gate, silu, up, product 4*4*128; inputs of q/k/v and gate/up for weight grads 2 x 4*64.
    layer = 2 * (4 * 64 + 4) + 2 * 4 * 64 + 4 * (64 + 32 + 32 + 64) + 4 * 4 + 4 * 4 * 128 + 2 * 4 * 64
    assert layer == 4376
    assert layer_bytes_per_token(arch(TWO), spec, p)[0] == layer
    # After the layers: final norm (4*64 + 4 + 4*64), lm_head's input 4*64, log-probs 4*512,
    # labels and input ids (int64); RoPE cos and sin once (2 x 32 positions x 16 x 4 bytes); the loss.
    head = 4 * 64 + 4 + 4 * 64 + 4 * 64 + 4 * 512 + 8 + 8
    tokens = 2 * 32
    acts = activation_bytes(TWO, spec, p, block_size=32)
    assert acts["saved"] == tokens * (2 * layer + head) + 2 * 32 * 16 * 4 + 4 == 745_732
    assert acts["peak"] == acts["saved"] + 2 * 4 * 512 * tokens  # + gradients of log-probs and logits


def saved_tensor_bytes(model, input_ids, autocast: bool) -> int:
    """Bytes autograd keeps for backward in one forward pass (parameters excluded), by storage."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=input_ids, labels=input_ids)
    return sum(seen.values())


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    "method,dtype,gc,targets",
    [
        ("full", "fp32", False, None),
        ("full", "fp32", True, None),
        ("lora", "fp32", False, None),
        ("lora", "fp32", True, None),
        ("lora", "fp32", False, "all-linear"),
        ("full", "bf16", False, None),  # autocast over fp32 weights, as Trainer runs bf16 on a GPU
        # LoRA as train.py builds it for a 16-bit run: the projections in bf16, the rest of the base
        # in fp32 (as qlora's), PEFT's adapters in
        # fp32, under autocast (the CPU stands in for CUDA: matmuls autocast the same way).
        ("lora", "bf16", False, None),
        ("lora", "bf16", True, None),
        ("lora", "bf16", False, "all-linear"),
    ],
)
def test_activation_model_matches_what_autograd_saves(config, tmp_path, method, dtype, gc, targets):
    """The model as offloadbench.train.load_model builds it for the run (dtype, adapters,
    gradient checkpointing), counted tensor by tensor while autograd saves them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from offloadbench.training.model import load_model

    spec = spec_for(config, method, micro_batch_size=2, dtype=dtype, gradient_checkpointing=gc)
    if targets == "all-linear":
        spec["lora"]["target_modules"] = ALL_LINEAR
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TWO)).save_pretrained(tmp_path)
    spec["model"] = {"path": str(tmp_path), "revision": None, "name": "two"}
    model = load_model(spec, "cpu", dtype, zero3=False)
    if method == "lora":
        proj = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and "_proj" in n}
        rest = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and "_proj" not in n}
        assert proj == {torch.bfloat16 if dtype == "bf16" else torch.float32}
        assert rest == {torch.float32}  # embedding, norms, lm_head: as qlora's after prepare_model_for_kbit_training
        adapters = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
        assert adapters == {torch.float32}  # PEFT's autocast_adapter_dtype, whatever the base's dtype
    model.train()
    ids = torch.randint(0, 512, (2, 32))
    p = precision(spec, "cpu", zero3=False)
    predicted = activation_bytes(TWO, spec, p, block_size=32)["saved"]
    assert saved_tensor_bytes(model, ids, autocast=dtype == "bf16") == predicted


def test_qlora_activation_model_matches_what_autograd_saves(config, tmp_path):
    """QLoRA as train.py builds it: 4-bit NF4 base (bitsandbytes' CPU kernels), prepared for k-bit
    training (non-quantized weights to fp32), LoRA adapters on q_proj and v_proj."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from offloadbench.training.model import quantization_config

    spec = spec_for(config, "qlora", micro_batch_size=2)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TWO, use_cache=False)).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=quantization_config(spec, torch.float32), device_map={"": "cpu"}
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = spec["lora"]
    model = get_peft_model(
        model, LoraConfig(r=lora["r"], lora_dropout=lora["dropout"], target_modules=lora["target_modules"])
    )
    model.train()
    assert type(model.base_model.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    p = precision(spec, "cpu", zero3=False)
    predicted = activation_bytes(TWO, spec, p, block_size=32)["saved"]
    assert saved_tensor_bytes(model, torch.randint(0, 512, (2, 32)), autocast=False) == predicted


def test_largest_tensor_is_the_largest_parameter_of_the_model():
    """What train fills into DeepSpeed's NVMe buffer_size "auto": every swapped tensor must fit."""
    eight_b = json.loads((REPO / "configs" / "models" / "llama-3.1-8b.json").read_text())
    for cfg in (TWO, eight_b):
        model = meta_model(cfg)
        assert largest_tensor(cfg) == max(p.numel() for p in model.parameters())
    assert largest_tensor(eight_b) == 128_256 * 4_096
