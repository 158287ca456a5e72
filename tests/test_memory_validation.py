"""The memory model against published GPU measurements (benchmarks/memory_validation.py): the
committed results/reference/memory-validation.csv is what the kept sources give today, and the
sources are enough of them (rows, independent sources, a location for each)."""

from __future__ import annotations

import csv
import importlib.util

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "memory_validation.py"
COMMITTED = REPO / "results" / "reference" / "memory-validation.csv"


def load_script():
    spec = importlib.util.spec_from_file_location("memory_validation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_committed_csv_is_what_the_sources_give(tmp_path):
    mv = load_script()
    mv.write_csv(mv.rows(), tmp_path / "memory-validation.csv")
    assert read(tmp_path / "memory-validation.csv") == read(COMMITTED), (
        "results/reference/memory-validation.* is stale: rerun " + mv.COMMAND
    )


def test_enough_published_measurements_each_with_its_location():
    rows = read(COMMITTED)
    assert len(rows) >= 6
    assert len({r["source"] for r in rows}) >= 3
    for r in rows:
        assert r["location"].startswith("https://github.com/"), r["id"]
        assert r["quote"] and r["what_was_measured"], r["id"]
        assert float(r["published_gib"]) > 0 and float(r["predicted_gib"]) > 0
        ratio = float(r["published_gib"]) / float(r["predicted_gib"])
        assert abs(ratio - float(r["ratio"])) < 0.01, r["id"]
        # a row outside the band says why
        assert r["within_25pct"] == "yes" or "outside:" in r["note"], r["id"]


def test_the_markdown_names_the_command_that_writes_it():
    mv = load_script()
    text = (REPO / "results" / "reference" / "memory-validation.md").read_text()
    assert mv.COMMAND in text
    assert (REPO / "results" / "reference" / "memory-validation.png").stat().st_size > 10_000
