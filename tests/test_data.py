"""Data prep: none of the tutorial's data bugs can happen, and the hub path works offline."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import validate
from transformers import AutoTokenizer

from offloadbench import corpora
from offloadbench.corpora import split_documents
from offloadbench.data import build_corpus, make_blocks, rows_to_documents, tokenize_corpus
from offloadbench.model import train_tokenizer

WIKITEXT_ROWS = [
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 is a tactical role @-@ playing video game .\n",
    " \n",
    " = = Gameplay = = \n",
    "",
    " As with previous games , the player controls a squad .\n",
    "",
    " = Tower Building of the Little Rock Arsenal = \n",
    "",
    " The building was constructed in 1840 .\n",
]


def wikitext_rows(n_articles: int = 40) -> list[str]:
    """Real English text in wikitext's shape: titles, section headings, paragraphs, empty rows."""
    rows = []
    for name, text in sorted(corpora.load("pydoc").items())[:n_articles]:
        rows += ["", f" = {name} = \n", ""]
        for para in text.split("\n\n"):
            if para.strip():
                rows += [f" {para.strip()}\n", ""]
    return rows


def test_wikitext_rows_group_into_articles_without_empty_lines():
    docs = rows_to_documents(WIKITEXT_ROWS, "wikitext_articles")
    assert len(docs) == 2
    assert docs[0].startswith("= Valkyria Chronicles III =")
    assert "= = Gameplay = =" in docs[0], "a subsection heading must not start a new article"
    assert all(line.strip() for doc in docs for line in doc.split("\n")), "empty lines kept"


def test_rows_mode_drops_empty_and_whitespace_rows():
    assert rows_to_documents(["", " \n", "a\n", "  b  "], "row") == ["a", "b"]


def test_builtin_split_is_deterministic_disjoint_and_near_the_fraction():
    docs = corpora.load("pydoc")
    a, b = split_documents(docs, 0.1), split_documents(dict(reversed(list(docs.items()))), 0.1)
    assert a == b, "split depends on dict order"
    assert not set(a["train"]) & set(a["validation"])
    share = sum(map(len, a["validation"])) / sum(len(t.strip()) for t in docs.values())
    assert 0.1 <= share < 0.2
    assert len(a["train"]) + len(a["validation"]) == sum(1 for t in docs.values() if t.strip())


def test_stdlib_docstrings_is_a_real_corpus_of_modules():
    docs = corpora.load("stdlib_docstrings")
    assert len(docs) > 300 and sum(map(len, docs.values())) > 1_000_000
    assert not any(name.startswith("test") for name in docs)


def test_make_blocks_drops_the_tail_and_never_pads():
    blocks, dropped = make_blocks([[1, 2, 3], [4, 5], [6, 7, 8, 9]], 4)
    assert blocks.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert dropped == 1


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    train_tokenizer(list(corpora.load("pydoc").values()), 1024).save_pretrained(path)
    return path


def _files_spec(tmp_path, rows):
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": rows}), tmp_path / f"{split}.parquet")
    return {
        "name": "standin",
        "source": "files",
        "files": {
            "format": "parquet",
            "train": str(tmp_path / "train.parquet"),
            "validation": str(tmp_path / "validation.parquet"),
        },
        "text_column": "text",
        "documents": "wikitext_articles",
        "validation_fraction": 0.1,
        "block_size": 32,
        "tail": "drop",
    }


def test_tokenized_blocks_decode_back_to_the_text(tmp_path, tokenizer_dir):
    """No spaces between characters, labels not shifted, no empty or ragged blocks."""
    spec = _files_spec(tmp_path, wikitext_rows())
    corpus = build_corpus(spec, tmp_path / "corpus")
    validate(corpus, "corpus_manifest.schema.json")
    manifest = tokenize_corpus(spec, tmp_path / "corpus", str(tokenizer_dir), tmp_path / "data")
    validate(manifest, "data_manifest.schema.json")
    assert json.loads((tmp_path / "data" / "manifest.json").read_text()) == manifest

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    data = datasets.load_from_disk(str(tmp_path / "data"))
    docs = datasets.load_from_disk(str(tmp_path / "corpus" / "text"))["train"]["text"]
    ids = np.array(data["train"]["input_ids"])
    labels = np.array(data["train"]["labels"])
    assert ids.shape == (manifest["splits"]["train"]["blocks"], 32)
    assert (ids == labels).all(), "labels must equal input_ids (the model shifts them)"
    assert not (ids == tok.eos_token_id).all(axis=1).any(), "a block holds nothing but EOS"
    expected = tok.eos_token.join(docs) + tok.eos_token
    decoded = tok.decode(ids.reshape(-1).tolist())
    assert expected.startswith(decoded), "decoding the blocks does not give back the text"
    assert len(decoded) > 0.9 * len(expected)
    assert "V a l" not in decoded


def test_hub_path_loads_a_wikitext_shaped_repo_offline(tmp_path, tokenizer_dir, monkeypatch):
    """The hub code path (load_dataset(path, name, revision=...)) on a local stand-in repo."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "wikitext"
    (repo / "wikitext-2-raw-v1").mkdir(parents=True)
    (repo / "README.md").write_text(
        "---\nconfigs:\n- config_name: wikitext-2-raw-v1\n  data_files:\n"
        "  - split: train\n    path: wikitext-2-raw-v1/train-*.parquet\n"
        "  - split: validation\n    path: wikitext-2-raw-v1/validation-*.parquet\n---\n"
    )
    rows = wikitext_rows()
    for split in ("train", "validation"):
        pq.write_table(pa.table({"text": rows}), repo / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    spec = {**_files_spec(tmp_path, rows), "source": "hub", "name": "wikitext-2-raw-v1"}
    spec["hub"] = {
        "path": str(repo),
        "name": "wikitext-2-raw-v1",
        "revision": "b08601e04326c79dfdd32d625aee71d232d685c3",
    }
    del spec["files"]
    corpus = build_corpus(spec, tmp_path / "corpus")
    assert corpus["source"]["kind"] == "hub"
    assert corpus["splits"]["train"]["documents"] == 40
    manifest = tokenize_corpus(spec, tmp_path / "corpus", str(tokenizer_dir), tmp_path / "data")
    assert manifest["splits"]["validation"]["blocks"] > 0


def test_missing_text_column_names_the_key(tmp_path):
    spec = {**_files_spec(tmp_path, WIKITEXT_ROWS), "text_column": "content"}
    with pytest.raises(ValueError, match="dataset.text_column"):
        build_corpus(spec, tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists(), "a failed step left a partial output"
