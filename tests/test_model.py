"""The offline base model: built from a config with a seed, saved and loaded like a hub model."""

from __future__ import annotations

import torch
from conftest import SCRATCH, small_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from offloadbench.model import build_model


def test_tokenizer_round_trips_text_exactly(tmp_path):
    tok = small_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x ** 2  # naïve, ünïcode\n\n"
    ids = loaded(text, add_special_tokens=False)["input_ids"]
    assert loaded.decode(ids) == text
    assert len(ids) < len(text), "byte-level BPE learned no merges"
    assert loaded.eos_token == "<|endoftext|>" and len(loaded) == 512


def test_model_is_llama_seeded_and_reloads_with_auto_classes(tmp_path):
    tok = small_tokenizer()
    a, b = build_model(SCRATCH, tok, seed=7), build_model(SCRATCH, tok, seed=7)
    c = build_model(SCRATCH, tok, seed=8)
    assert type(a).__name__ == "LlamaForCausalLM"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    a.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, use_safetensors=True)
    assert torch.equal(loaded.lm_head.weight, a.lm_head.weight)
    assert loaded.config.num_key_value_heads == 2 and loaded.config.vocab_size == 512


def _two_layer(tmp_path):
    from conftest import TWO
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TWO)).save_pretrained(tmp_path)
    return {"path": str(tmp_path), "revision": None, "name": "two"}


def test_lora_and_qlora_hold_the_same_non_projection_parts_in_fp32(tmp_path):
    """A bf16 run on the CPU (training.dtype bf16 is allowed there): lora's embedding, norms and
    lm_head are fp32 and its projections bf16; qlora's non-quantized parts are fp32 too, its
    projections NF4. The two differ only in the projections' storage, and observe.base_dtypes
    records what the live model holds."""
    from conftest import LORA_TWO, TWO, spec_for

    from offloadbench.config import load_config
    from offloadbench.memory.counting import base_bytes
    from offloadbench.memory.predict import precision, predict
    from offloadbench.training.model import load_model
    from offloadbench.training.observe import base_dtypes

    config = load_config(overrides={"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}})
    ref = _two_layer(tmp_path)
    models = {}
    for method in ("lora", "qlora"):
        spec = spec_for(config, method, dtype="bf16")
        spec["model"] = ref
        models[method] = (spec, load_model(spec, "cpu", "bf16", zero3=False))
    lora_spec, lora = models["lora"]
    _, qlora = models["qlora"]

    def dtypes(model, part):
        return {p.dtype for n, p in model.named_parameters() if part in n and "lora_" not in n}

    for model in (lora, qlora):
        for part in ("embed_tokens", "norm", "lm_head"):
            assert dtypes(model, part) == {torch.float32}, part
    assert dtypes(lora, "_proj") == {torch.bfloat16}
    assert {type(p).__name__ for n, p in qlora.named_parameters() if "_proj.base_layer" in n} == {"Params4bit"}
    assert base_dtypes(lora) == {"projections": "bfloat16", "other": "float32"}
    assert base_dtypes(qlora) == {"projections": "nf4", "other": "float32"}

    # The memory model counts lora's weights as the live model holds them, byte for byte.
    live = sum(p.numel() * p.element_size() for p in lora.parameters())
    p = precision(lora_spec, "cpu", zero3=False)
    assert p["proj"] == 2 and p["base"] == 4
    assert base_bytes(TWO, lora_spec, p) + 4 * LORA_TWO == live
    assert predict(lora_spec, TWO, 32, "cpu")["predicted"]["host"]["weights"] == live
