"""The offline corpora, shipped as text: the same documents on every Python.

The default profile trains on two English technical corpora that need no network: the language
reference's topics (``pydoc_data.topics``) and the standard library's docstrings. They used to be
read from the running interpreter, so a reviewer on Python 3.12 got a different corpus, tokenizer
and model than the reference run on 3.11. They are now extracted once, from CPython 3.11.7, and
shipped beside this file (``<name>.json.gz``: one JSON object, document name -> text); the sha256
of each file's JSON text is in ``manifest.json`` and checked at every load. The text is CPython's
and comes under its licence (``LICENSE``, the PSF License Version 2).

Standard library only, so that a test can run it under every interpreter on the machine:

    python -m offloadbench.corpora check     # hashes of the shipped files and of their split
    python -m offloadbench.corpora extract   # re-extract from the running interpreter (maintainers)
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import platform
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).parent
FILES = {"pydoc": "pydoc-topics.json.gz", "stdlib_docstrings": "stdlib-docstrings.json.gz"}
MANIFEST = HERE / "manifest.json"


class CorpusError(ValueError):
    """A shipped corpus is missing or is not the text its manifest names."""


def _canonical(docs: dict[str, str]) -> bytes:
    return json.dumps(docs, sort_keys=True, ensure_ascii=False, indent=0).encode("utf-8")


def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def load(name: str) -> dict[str, str]:
    """Documents of a shipped corpus (name -> text), checked against the manifest's sha256."""
    if name not in FILES:
        raise CorpusError(f"no shipped corpus {name!r}; there are {', '.join(sorted(FILES))}")
    path = HERE / FILES[name]
    try:
        raw = gzip.decompress(path.read_bytes())
    except OSError as e:
        raise CorpusError(f"shipped corpus {path} cannot be read ({e}); restore it from the repository") from e
    want = manifest()[name]["sha256"]
    got = hashlib.sha256(raw).hexdigest()
    if got != want:
        raise CorpusError(f"shipped corpus {path}: sha256 {got}, its manifest says {want}; restore it from git")
    return json.loads(raw.decode("utf-8"))


def record(name: str) -> dict:
    """What a data manifest records of a shipped corpus: which file, its hash, where it came from."""
    entry = manifest()[name]
    return {"kind": name, "file": FILES[name], "sha256": entry["sha256"], "extracted_from": entry["extracted_from"]}


def split_documents(docs: dict[str, str], validation_fraction: float) -> dict[str, list[str]]:
    """Split named documents deterministically into train and validation.

    Documents are ordered by the sha256 of their name and go to validation until it holds
    ``validation_fraction`` of all characters; the rest is training. The split does not depend on
    dict order, and no document is in both splits. Empty documents are dropped.
    """
    docs = {name: text.strip() for name, text in docs.items() if text.strip()}
    total = sum(len(t) for t in docs.values())
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    held = 0
    for name in sorted(docs, key=lambda n: hashlib.sha256(n.encode()).hexdigest()):
        to_validation = held < validation_fraction * total
        held += len(docs[name]) if to_validation else 0
        splits["validation" if to_validation else "train"].append(docs[name])
    return splits


def text_sha256(documents: list[str]) -> str:
    """The hash a corpus manifest records for one split (its documents joined by newlines)."""
    return hashlib.sha256("\n".join(documents).encode()).hexdigest()


# --- extraction from a running CPython (maintainers only; the shipped files are what runs use) ---

STDLIB_SKIP = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "lib2to3",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "pydoc_data",
    "__pycache__",
}


def extract_pydoc() -> dict[str, str]:
    """pydoc_data.topics: ~80 topics of the Python language reference (~465k characters)."""
    from pydoc_data.topics import topics

    return dict(topics)


def extract_stdlib_docstrings(min_chars: int = 80) -> dict[str, str]:
    """Docstrings of the standard library's own modules, one document per module (~1.4M characters).

    Parsed with ``ast`` from the source files, never imported, so nothing runs.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part in STDLIB_SKIP or part.startswith(("test", "config-")) for part in rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
        docstrings = (ast.get_docstring(n) or "" for n in ast.walk(tree) if isinstance(n, nodes))
        parts = [d for d in docstrings if len(d) >= min_chars]
        if parts:
            docs[str(rel)] = "\n\n".join(parts)
    return docs


EXTRACTORS = {"pydoc": extract_pydoc, "stdlib_docstrings": extract_stdlib_docstrings}


def extract(out: Path = HERE) -> dict:
    """Write every corpus extracted from the running interpreter, and their manifest."""
    entries = {}
    for name, fn in EXTRACTORS.items():
        docs = fn()
        raw = _canonical(docs)
        (out / FILES[name]).write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        entries[name] = {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "documents": len(docs),
            "characters": sum(map(len, docs.values())),
            "extracted_from": f"{platform.python_implementation()} {platform.python_version()}",
            "extracted_by": "python -m offloadbench.corpora extract",
        }
    (out / MANIFEST.name).write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return entries


def check(validation_fraction: float = 0.1) -> dict:
    """Hashes of each shipped corpus and of its split; the same on every interpreter."""
    out = {}
    for name in FILES:
        splits = split_documents(load(name), validation_fraction)
        out[name] = {split: text_sha256(docs) for split, docs in splits.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["extract"]:
        print(json.dumps(extract(Path(args[1]) if len(args) > 1 else HERE), indent=2))
    elif args[:1] == ["check"]:
        fraction = float(args[1]) if len(args) > 1 else 0.1
        print(json.dumps({"python": platform.python_version(), "splits": check(fraction)}, sort_keys=True))
    else:
        print("usage: python -m offloadbench.corpora {check [validation_fraction] | extract [folder]}", file=sys.stderr)
        return 2
    return 0
