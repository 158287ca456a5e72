"""Data preparation: a text corpus split into train/validation, then fixed-length token blocks.

Two steps, each a rule:

    python -m offloadbench.data corpus   --spec '<dataset spec JSON>' --out results/corpus/<dataset>
    python -m offloadbench.data tokenize --spec '<dataset spec JSON>' --corpus results/corpus/<dataset> \
        --tokenizer results/models/<model>-init --out results/data/<dataset>

``corpus`` writes a ``datasets.DatasetDict`` of documents (one ``text`` column, splits ``train``
and ``validation``; empty rows are dropped). ``tokenize`` tokenizes whole documents in batches,
puts EOS after every document, concatenates, and cuts blocks of ``block_size`` tokens; the tail
after the last full block is dropped, so no block is padded and every block has the same length.
``labels`` equal ``input_ids``: the model shifts them itself, so they are never pre-shifted here.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

import numpy as np

from . import corpora
from .env import exit_fast
from .errors import ConfigError
from .io import atomic_dir, write_json
from .spec import load_spec

SPLITS = ("train", "validation")
# A wikitext article title row: ' = Title = ' (one '=' each side; ' = = Section = = ' is a subsection).
WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


# Built-in sources: text shipped in src/offloadbench/corpora (extracted once from CPython 3.11.7),
# so the corpus is the same on every interpreter.
BUILTIN_SOURCES = tuple(corpora.FILES)


def rows_to_documents(rows: list[str], mode: str) -> list[str]:
    """Turn dataset rows into documents, dropping empty and whitespace-only rows.

    ``row``: every non-empty row is a document. ``wikitext_articles``: wikitext stores one
    paragraph or heading per row with many empty rows; an article starts at each ' = Title = '
    row and its non-empty rows are joined with newlines.
    """
    if mode == "row":
        return [r.strip() for r in rows if r and r.strip()]
    if mode != "wikitext_articles":
        raise ConfigError(f"config key dataset.documents: unknown mode {mode!r}; use row or wikitext_articles")
    docs: list[list[str]] = []
    for row in rows:
        line = row.rstrip("\n")
        if not line.strip():
            continue
        if WIKITEXT_TITLE.match(line) or not docs:
            docs.append([])
        docs[-1].append(line.strip())
    return ["\n".join(d) for d in docs]


def load_rows(ds: dict, root: Path) -> dict[str, list[str]]:
    """Rows of the text column per split, from the hub or from local files, through datasets."""
    import datasets

    if ds["source"] == "hub":
        hub = ds["hub"]
        loaded = datasets.load_dataset(hub["path"], hub.get("name"), revision=hub["revision"])
    else:
        files = ds["files"]
        data_files = {s: str(root / files[s]) for s in SPLITS}
        for split, path in data_files.items():
            if not Path(path).is_file():
                raise ConfigError(f"config key dataset.files.{split}: file {path} does not exist")
        loaded = datasets.load_dataset(files["format"], data_files=data_files)
    rows = {}
    for split in SPLITS:
        if split not in loaded:
            raise ConfigError(f"dataset {ds['name']}: split {split!r} missing; it has {sorted(loaded)}")
        if ds["text_column"] not in loaded[split].column_names:
            raise ConfigError(
                f"config key dataset.text_column: {ds['text_column']!r} is not a column of "
                f"{ds['name']} ({', '.join(loaded[split].column_names)})"
            )
        rows[split] = loaded[split][ds["text_column"]]
    return rows


def source_record(ds: dict) -> dict:
    if ds["source"] in BUILTIN_SOURCES:
        return corpora.record(ds["source"])
    if ds["source"] == "hub":
        return {"kind": "hub", **ds["hub"]}
    return {"kind": "files", **ds["files"]}


def build_corpus(ds: dict, out: Path, root: Path = Path(".")) -> dict:
    """Write the document corpus (DatasetDict with a ``text`` column) and its manifest."""
    import datasets

    if ds["source"] in BUILTIN_SOURCES:
        docs = corpora.split_documents(corpora.load(ds["source"]), ds["validation_fraction"])
    else:
        docs = {s: rows_to_documents(rows, ds["documents"]) for s, rows in load_rows(ds, root).items()}
    for split in SPLITS:
        if not docs[split]:
            raise ConfigError(f"dataset {ds['name']}: split {split} holds no non-empty text")
    manifest = {
        "dataset": ds["name"],
        "source": source_record(ds),
        "documents_mode": ds["documents"],
        "splits": {},
    }
    with atomic_dir(out) as tmp:
        dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": docs[s]}) for s in SPLITS})
        dd.save_to_disk(str(tmp / "text"))
        for split in SPLITS:
            manifest["splits"][split] = {
                "documents": len(docs[split]),
                "characters": sum(len(d) for d in docs[split]),
                "text_sha256": corpora.text_sha256(docs[split]),
            }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def load_corpus(corpus_dir: Path):
    import datasets

    return datasets.load_from_disk(str(Path(corpus_dir) / "text"))


def tokenize_documents(texts: list[str], tokenizer, batch_size: int = 256) -> list[list[int]]:
    """Token ids of each document (no special tokens), tokenized in batches, EOS appended."""
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {tokenizer.name_or_path} has no eos_token; documents cannot be separated")
    out: list[list[int]] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], add_special_tokens=False)["input_ids"]
        out.extend(ids + [tokenizer.eos_token_id] for ids in enc)
    return out


def make_blocks(docs_ids: list[list[int]], block_size: int) -> tuple[np.ndarray, int]:
    """Concatenate documents and cut ``[n_blocks, block_size]``; returns blocks and dropped tail tokens."""
    flat = np.fromiter((t for ids in docs_ids for t in ids), dtype=np.int64)
    n_blocks = len(flat) // block_size
    return flat[: n_blocks * block_size].reshape(n_blocks, block_size), int(len(flat) - n_blocks * block_size)


def tokenize_corpus(ds: dict, corpus_dir: Path, tokenizer_path: str, out: Path, revision: str | None = None) -> dict:
    """Tokenize the corpus into blocks and save them with ``save_to_disk`` plus ``manifest.json``."""
    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, revision=revision)
    corpus = load_corpus(corpus_dir)
    block_size = ds["block_size"]
    caps = {"train": ds.get("max_train_blocks"), "validation": ds.get("max_validation_blocks")}
    corpus_manifest = load_spec(str(Path(corpus_dir) / "manifest.json"))
    manifest = {
        "dataset": ds["name"],
        "source": corpus_manifest["source"],
        "corpus_sha256": {s: corpus_manifest["splits"][s]["text_sha256"] for s in SPLITS},
        "tokenizer": {
            "path": tokenizer_path,
            "revision": revision,
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "eos_token_id": tokenizer.eos_token_id,
        },
        "block_size": block_size,
        "tail": "drop",
        "labels": "equal to input_ids (the model shifts them)",
        "splits": {},
    }
    with atomic_dir(out) as tmp:
        splits = {}
        for split in SPLITS:
            docs_ids = tokenize_documents(corpus[split]["text"], tokenizer)
            blocks, dropped = make_blocks(docs_ids, block_size)
            if caps[split]:
                blocks = blocks[: caps[split]]
            if len(blocks) == 0:
                raise ConfigError(
                    f"config key dataset.block_size: {block_size} tokens is more than the whole {split} split "
                    f"({sum(map(len, docs_ids))} tokens); no block can be made"
                )
            blocks = blocks.astype(np.int32)
            splits[split] = datasets.Dataset.from_dict({"input_ids": blocks, "labels": blocks.copy()})
            manifest["splits"][split] = {
                "documents": len(docs_ids),
                "tokens": int(blocks.size),
                "blocks": int(len(blocks)),
                "tail_tokens_dropped": dropped,
                "data_sha256": hashlib.sha256(blocks.tobytes()).hexdigest(),
            }
        datasets.DatasetDict(splits).save_to_disk(str(tmp))
        write_json(tmp / "manifest.json", manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("corpus", help="split the text corpus into train/validation documents")
    p.add_argument("--spec", required=True, help="dataset spec (JSON text or file)")
    p.add_argument("--out", required=True, type=Path)
    p = sub.add_parser("tokenize", help="tokenize the corpus into fixed-length blocks")
    p.add_argument("--spec", required=True)
    p.add_argument("--corpus", required=True, type=Path)
    p.add_argument("--tokenizer", required=True, help="local folder or hub id of the tokenizer")
    p.add_argument("--revision", default=None, help="hub revision of the tokenizer")
    p.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    ds = load_spec(args.spec)
    if args.step == "corpus":
        manifest = build_corpus(ds, args.out)
    else:
        manifest = tokenize_corpus(ds, args.corpus, args.tokenizer, args.out, args.revision or None)
    print(manifest["splits"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    exit_fast(main())
