"""The offline base model: a byte-level BPE tokenizer and a Llama-architecture model built here.

    python -m offloadbench.model --spec '<model spec JSON>' --corpus results/corpus/<dataset> \
        --out results/models/<model>-init

The tokenizer is trained with ``tokenizers`` on the training split only; the model is a
``LlamaForCausalLM`` initialised from ``LlamaConfig`` with the config's seed. Both are written with
``save_pretrained`` (safetensors) and load back with ``AutoTokenizer`` / ``AutoModelForCausalLM``
exactly as a hub model would.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import load_corpus
from .env import exit_fast
from .io import atomic_dir, write_json
from .spec import load_spec

EOS = "<|endoftext|>"


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE (as GPT-2/Llama 3): every byte is in the alphabet, so decode(encode(x)) == x."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # One special token serves as BOS, EOS and PAD; data blocks are never padded.
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def build_model(scratch: dict, tokenizer, seed: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=scratch["hidden_size"],
        intermediate_size=scratch["intermediate_size"],
        num_hidden_layers=scratch["num_hidden_layers"],
        num_attention_heads=scratch["num_attention_heads"],
        num_key_value_heads=scratch["num_key_value_heads"],
        max_position_embeddings=scratch["max_position_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model


def build(spec: dict, corpus_dir: Path, out: Path) -> dict:
    corpus = load_corpus(corpus_dir)
    tokenizer = train_tokenizer(corpus["train"]["text"], spec["scratch"]["vocab_size"])
    model = build_model(spec["scratch"], tokenizer, spec["seed"])
    info = {
        "model": spec["name"],
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "seed": spec["seed"],
        "tokenizer_trained_on": str(Path(corpus_dir) / "text" / "train"),
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "build_info.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.model", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="model spec (JSON text or file)")
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    info = build(load_spec(args.spec), args.corpus, args.out)
    print(info, file=sys.stderr)
    return 0


if __name__ == "__main__":
    exit_fast(main())
