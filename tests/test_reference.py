"""The compare step: each metric's deviation from the shipped reference, judged by its group's tolerance."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import REPO, validate

from offloadbench import corpora
from offloadbench.config import load_config
from offloadbench.reference import compare, data_differences, deviation, read_data, record, run_compare

TOL = {"loss": 0.01, "gain": 0.25, "memory": 0.25, "time": 2.0}


def row(run, **kw):
    base = {
        "run": run,
        "device": "cpu",
        "status": "ok",
        "train loss": 5.0,
        "eval loss": 5.5,
        "host RSS peak (GiB)": 0.6,
        "GPU alloc peak (GiB)": None,
        "tokens/s": 10_000.0,
    }
    return {**base, **kw}


def verdicts(rows):
    return {(r["run"], r["metric"]): r["verdict"] for r in rows}


def test_deviation_is_symmetric_and_zero_when_equal():
    assert deviation(2.0, 2.0) == 0
    assert deviation(3.0, 2.0) == pytest.approx(0.5)
    assert deviation(2.0, 3.0) == pytest.approx(0.5)
    assert math.isinf(deviation(0.0, 1.0))


def test_losses_are_judged_tightly_and_timings_loosely():
    ref = pd.DataFrame([row("full")])
    cur = pd.DataFrame([row("full", **{"train loss": 5.06, "eval loss": 5.52, "tokens/s": 4000.0})])
    got = verdicts(compare(cur, ref, TOL))
    assert got[("full", "train loss")] == "outside"  # 1.2% > 1%
    assert got[("full", "eval loss")] == "within"  # 0.36%
    assert got[("full", "tokens/s")] == "within"  # 2.5x slower, within 3x
    assert got[("full", "host RSS peak (GiB)")] == "within"
    assert ("full", "GPU alloc peak (GiB)") not in got  # neither table has a number: nothing to judge


def test_memory_beyond_tolerance_is_outside():
    ref = pd.DataFrame([row("full")])
    cur = pd.DataFrame([row("full", **{"host RSS peak (GiB)": 0.8})])
    assert verdicts(compare(cur, ref, TOL))[("full", "host RSS peak (GiB)")] == "outside"


def test_status_device_and_missing_runs_are_reported_not_compared():
    ref = pd.DataFrame([row("full"), row("lora"), row("zero3"), row("gone")])
    cur = pd.DataFrame(
        [row("full", status="oom"), row("lora", device="cuda"), row("zero3"), row("new")],
    )
    got = verdicts(compare(cur, ref, TOL))
    assert got[("full", "status")] == "differs"
    assert got[("lora", "device")] == "differs"
    assert got[("new", "run")] == "no reference"
    assert got[("gone", "run")] == "no result"
    assert got[("zero3", "train loss")] == "within"
    assert not any(run == "full" and metric == "train loss" for run, metric in got)


def test_compare_without_a_reference_says_so(tmp_path):
    table = tmp_path / "comparison.csv"
    pd.DataFrame([row("full")]).to_csv(table, index=False)
    result = run_compare(table, tmp_path / "nowhere", TOL, tmp_path / "out" / "reference.json")
    assert result["available"] is False
    assert "No reference results" in (tmp_path / "out" / "reference.md").read_text()


def test_record_then_compare_round_trip(tmp_path):
    results, dest = recorded_reference(tmp_path, with_data=False)
    prov = json.loads((dest / "provenance.json").read_text())
    assert "data" not in prov, "no data folders: no data hashes recorded"
    assert prov["command"] == "make run" and prov["hardware"]["cpu"] == "AMD EPYC" and prov["git_commit"] == "abc"
    out = tmp_path / "compare" / "reference.json"
    result = run_compare(results / "tables" / "comparison.csv", dest, TOL, out)
    assert result["available"] and all(r["verdict"] == "within" for r in result["rows"])
    assert "`make run`" in out.with_suffix(".md").read_text()


def test_shipped_default_reference_has_provenance_and_every_default_run():
    ref = REPO / "results" / "reference" / "default"
    prov = json.loads((ref / "provenance.json").read_text())
    assert prov["command"] and prov["hardware"]["cores"] and prov["versions"]["torch"]
    table = pd.read_csv(ref / "comparison.csv")
    assert set(table["run"]) == {r["name"] for r in load_config()["runs"]}
    assert (table["status"] == "ok").all()
    claims = json.loads((ref / "claims.json").read_text())
    validate(claims, "claims.schema.json")


def data_manifest(folder, name="pydoc-topics", text="t" * 64, blocks="b" * 64):
    folder.mkdir(parents=True)
    splits = {s: {"data_sha256": blocks, "blocks": 3} for s in ("train", "validation")}
    manifest = {"dataset": name, "corpus_sha256": {"train": text, "validation": text}, "splits": splits}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def recorded_reference(tmp_path, with_data=True):
    """A finished run's results folder (one run, `full`) recorded as the reference of profile tiny."""
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "runs" / "full").mkdir(parents=True)
    pd.DataFrame([row("full")]).to_csv(results / "tables" / "comparison.csv", index=False)
    for name in ("tables/comparison.md", "tables/comparison.tex", "tables/memory.csv", "claims.md"):
        (results / name).write_text("x\n")
    (results / "claims.json").write_text("{}")
    summary = {"hardware": {"cpu": "AMD EPYC", "cores": 2, "gpu": None}, "versions": {}, "git_commit": "abc"}
    (results / "runs" / "full" / "summary.json").write_text(json.dumps(summary))
    if with_data:
        data_manifest(results / "data" / "pydoc-topics")
    return results, record("tiny", "make run", results, tmp_path / "reference")


def test_the_reference_records_its_data_and_a_run_on_the_same_data_is_judged(tmp_path):
    results, dest = recorded_reference(tmp_path)
    prov = json.loads((dest / "provenance.json").read_text())
    assert prov["data"]["pydoc-topics"]["train"] == {"text_sha256": "t" * 64, "data_sha256": "b" * 64}
    out = tmp_path / "compare" / "reference.json"
    data = read_data([results / "data" / "pydoc-topics"])
    result = run_compare(results / "tables" / "comparison.csv", dest, TOL, out, data)
    assert result["data"] == {"checked": True, "identical": True, "differences": []}
    assert result["rows"] and all(r["verdict"] == "within" for r in result["rows"])
    assert "the same text and token blocks as the reference" in out.with_suffix(".md").read_text()


@pytest.mark.parametrize("changed", ["text", "blocks", "name"])
def test_on_other_data_no_metric_is_judged_and_the_hashes_are_named(tmp_path, changed):
    results, dest = recorded_reference(tmp_path)
    kw = {"text": {"text": "c" * 64}, "blocks": {"blocks": "d" * 64}, "name": {"name": "wikitext"}}[changed]
    other = data_manifest(tmp_path / "other", **kw)
    out = tmp_path / "compare" / "reference.json"
    result = run_compare(results / "tables" / "comparison.csv", dest, TOL, out, read_data([other]))
    assert result["rows"] == [] and result["data"]["identical"] is False
    md = out.with_suffix(".md").read_text()
    assert "no metric is judged" in md
    if changed == "name":
        assert "dataset wikitext is not in the reference" in md
    else:
        value = kw[changed] if changed == "text" else kw["blocks"]
        assert f"sha256 {value} here, {'t' * 64 if changed == 'text' else 'b' * 64} in the reference" in md
    assert "no metric is judged" in out.with_suffix(".html").read_text()


def test_a_reference_without_data_hashes_is_judged_with_a_note(tmp_path):
    results, dest = recorded_reference(tmp_path)
    prov = json.loads((dest / "provenance.json").read_text())
    del prov["data"]
    (dest / "provenance.json").write_text(json.dumps(prov))
    out = tmp_path / "compare" / "reference.json"
    result = run_compare(results / "tables" / "comparison.csv", dest, TOL, out, {"x": {}})
    assert result["rows"] and result["data"]["checked"] is False
    assert "records no data hashes" in out.with_suffix(".md").read_text()


def test_data_differences_is_empty_only_for_the_same_hashes():
    same = {"d": {"train": {"text_sha256": "a", "data_sha256": "b"}}}
    assert data_differences(same, same) == []
    assert data_differences(same, {"d": {"train": {"text_sha256": "a", "data_sha256": "c"}}})
    assert data_differences(same, {"d": {"validation": {"text_sha256": "a", "data_sha256": "b"}}})


def test_shipped_default_reference_trained_on_the_shipped_corpus():
    """The reference's recorded text hashes are those of the shipped corpora's split, on any Python."""
    prov = json.loads((REPO / "results" / "reference" / "default" / "provenance.json").read_text())
    config = load_config()
    datasets = {config["dataset"]["name"]: config["dataset"], **{}}
    pretrain = config["model"]["pretrain"]["dataset"]
    datasets[pretrain["name"]] = pretrain
    assert set(prov["data"]) == set(datasets)
    for name, ds in datasets.items():
        splits = corpora.split_documents(corpora.load(ds["source"]), ds["validation_fraction"])
        for split, docs in splits.items():
            assert prov["data"][name][split]["text_sha256"] == corpora.text_sha256(docs), (name, split)


def test_the_html_page_counts_metrics_within_as_the_markdown_does():
    from offloadbench.reference import to_html

    rows = [
        {"run": "a", "metric": "eval loss", "reference": 1.0, "current": 1.0, "deviation": 0.0, "tolerance": 0.01,
         "verdict": "within"},
        {"run": "a", "metric": "eval gain", "reference": 0.1, "current": 0.0, "deviation": None, "tolerance": 0.25,
         "verdict": "outside"},  # inf, written as null: outside, not left uncounted
        {"run": "b", "metric": "all", "verdict": "missing", "note": "no summary"},
    ]  # fmt: skip
    result = {"available": True, "data": {"differences": []}, "provenance": None, "tolerances": {"loss": 0.01},
              "rows": rows}  # fmt: skip
    assert "1 of 2 metrics within, 1 outside" in to_html(result)
