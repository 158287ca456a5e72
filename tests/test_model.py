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
