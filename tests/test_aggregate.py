"""Tables from run summaries: one row per run (failed and missing ones too), units, LaTeX."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import GIB, validate, write_run

from offloadbench.aggregate import comparison, main, relative, to_latex, to_markdown


@pytest.fixture
def runs_dir(tmp_path):
    write_run(tmp_path, "lora")
    write_run(
        tmp_path,
        "qlora_offload",
        method="qlora",
        offload="params:cpu+optimizer:cpu",
        gpu_allocated_peak_bytes=6 * GIB,
        gpu_nvml_used_peak_bytes=7 * GIB,
        tokens_per_s=500.0,
    )
    write_run(
        tmp_path,
        "full",
        method="full",
        status="oom",
        error="CUDA out of memory",
        params_trainable=8_030_000_000,
        gpu_allocated_peak_bytes=None,
        tokens_per_s=None,
        eval_loss=None,
        eval_ppl=None,
    )
    return tmp_path


def test_every_run_gets_a_row_even_failed_and_missing(runs_dir):
    table = comparison(["lora", "qlora_offload", "full", "never_ran"], runs_dir)
    assert list(table["run"]) == ["lora", "qlora_offload", "full", "never_ran"]
    assert list(table["status"]) == ["ok", "ok", "oom", "missing"]
    lora = table.set_index("run").loc["lora"]
    assert lora["GPU alloc peak (GiB)"] == pytest.approx(18.0)
    assert lora["trainable (%)"] == pytest.approx(100 * 3_407_872 / 8_030_000_000)
    assert lora["step time (s)"] == pytest.approx(2.0)
    assert lora["checkpoint (MiB)"] == pytest.approx(13.0)
    assert pd.isna(table.set_index("run").loc["full", "tokens/s"])


def test_relative_table_divides_by_the_baseline(runs_dir):
    rel = relative(comparison(["lora", "qlora_offload", "full"], runs_dir), "lora").set_index("run")
    assert rel.loc["qlora_offload", "GPU alloc peak saving (x)"] == pytest.approx(3.0)
    assert rel.loc["qlora_offload", "slowdown (x)"] == pytest.approx(4.0)
    assert rel.loc["lora", "slowdown (x)"] == pytest.approx(1.0)
    assert pd.isna(rel.loc["full", "slowdown (x)"])


def test_markdown_and_latex_are_rounded_escaped_and_booktabs(runs_dir):
    table = comparison(["lora", "qlora_offload", "full"], runs_dir)
    md = to_markdown(table)
    assert md.count("\n") == 2 + 3 and "| 2,000 " in md and "| – " in md
    tex = to_latex(table, "caption", "tab:x")
    for rule in ("\\toprule", "\\midrule", "\\bottomrule"):
        assert tex.count(rule) == 1
    assert "qlora\\_offload" in tex and "trainable (\\%)" in tex
    assert "18.00" in tex and "--" in tex


def test_main_writes_every_table_format_and_the_provenance_page(runs_dir, tmp_path):
    out = tmp_path / "tables"
    spec = json.dumps({"runs": ["lora", "qlora_offload", "full"], "baseline_run": "lora", "profile": "test"})
    assert main(["--spec", spec, "--runs-dir", str(runs_dir), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}.{ext}" for stem in ("comparison", "relative", "seeds") for ext in ("csv", "md", "tex", "html")]
        + ["provenance.html", "paper.tex"]
    )
    page = (out / "comparison.html").read_text()
    assert page.count("<tr>") == 5 * 4 and "qlora_offload" in page  # 5 themes: header + one row per run
    paper = (out / "paper.tex").read_text()
    assert "\\begin{tabular}{lrrrrl}" in paper and "\\toprule" in paper  # six columns fit one paper column
    assert "qlora_offload: spec" in (out / "provenance.html").read_text()
    table = pd.read_csv(out / "comparison.csv")
    assert table.shape[0] == 3
    for row in table.astype(object).where(table.notna(), None).to_dict("records"):
        validate(row, "comparison_row.schema.json")


def test_memory_table_sets_prediction_beside_measurement_and_keeps_runs_without_one(tmp_path):
    from offloadbench.aggregate import memory_table

    memory = {
        "run": "zero3_offload_cpu",
        "device": "cuda",
        "predicted": {d: {"total": t * GIB} for d, t in (("gpu", 4), ("host", 150), ("nvme", 0))},
        "measured": {"gpu": 5 * GIB, "host": 165 * GIB, "nvme": None},
        "ratio": {"gpu": 1.25, "host": 1.1, "nvme": None},
        "above_baseline": {"predicted": {"host": 10 * GIB}, "measured": {"host": 25 * GIB}, "ratio": {"host": 2.5}},
        "predicted_load": {"gpu": 3 * GIB},
        "measured_load": {"gpu": 2 * GIB},
        "nvme_written": {"total": 0},
        "deepspeed_estimate": {"gpu_bytes": 2 * GIB, "host_bytes": 200 * GIB},
    }
    (tmp_path / "zero3_offload_cpu.json").write_text(json.dumps(memory))
    table = memory_table(["zero3_offload_cpu", "full"], tmp_path).set_index("run")
    row = table.loc["zero3_offload_cpu"]
    assert row["GPU predicted (GiB)"] == 4 and row["GPU measured (GiB)"] == 5 and row["GPU ratio"] == 1.25
    assert row["host ratio"] == 1.1 and pd.isna(row["NVMe written measured (GiB)"])
    assert row["host above baseline predicted (GiB)"] == 10 and row["host above baseline measured (GiB)"] == 25
    assert row["host above baseline ratio"] == 2.5
    assert row["GPU load predicted (GiB)"] == 3 and row["GPU load measured (GiB)"] == 2
    assert row["DeepSpeed est. host (GiB)"] == 200
    assert pd.isna(table.loc["full", "GPU predicted (GiB)"])  # no memory file: the row stays, empty


def test_seed_repeats_get_their_median_range_and_n(tmp_path):
    from offloadbench.seeds import seeds_table, spread_text

    write_run(tmp_path, "lora", eval_loss=2.0, eval_ppl=7.389)
    write_run(tmp_path, "lora.s2", eval_loss=2.2, eval_ppl=9.025)
    write_run(tmp_path, "lora.s3", status="failed", eval_loss=None, eval_ppl=None)
    write_run(tmp_path, "full", method="full", eval_loss=1.5)
    table = comparison(["full", "lora", "lora.s2", "lora.s3"], tmp_path)
    seeds = seeds_table(table, {"lora": ["lora", "lora.s2", "lora.s3"]})
    loss = seeds[seeds["metric"] == "eval loss"].iloc[0]
    assert loss["run"] == "lora" and (loss["n"], loss["of"]) == (2, 3), "a failed seed is counted, not averaged"
    assert loss["median"] == pytest.approx(2.1) and (loss["min"], loss["max"]) == (2.0, 2.2)
    assert loss["range"] == pytest.approx(0.2)
    assert set(seeds["run"]) == {"lora"}, "only repeated runs"
    assert spread_text(seeds, "lora", "eval loss") == "2.100 [2.000–2.200], n = 2"
    assert spread_text(seeds, "full", "eval loss") is None


def test_the_seeds_table_is_written_with_or_without_repeats(tmp_path):
    runs = tmp_path / "runs"
    for name, loss in (("lora", 2.0), ("lora.s2", 2.3)):
        write_run(runs, name, eval_loss=loss)
    spec = {
        "runs": ["lora", "lora.s2"],
        "baseline_run": "lora",
        "profile": "t",
        "repeats": {"lora": ["lora", "lora.s2"]},
    }
    assert main(["--spec", json.dumps(spec), "--runs-dir", str(runs), "--out", str(tmp_path / "t")]) == 0
    seeds = pd.read_csv(tmp_path / "t" / "seeds.csv")
    assert seeds.loc[seeds["metric"] == "eval loss", "median"].item() == pytest.approx(2.15)
    assert "lora.s2" in (tmp_path / "t" / "seeds.html").read_text()
    del spec["repeats"]
    assert main(["--spec", json.dumps(spec), "--runs-dir", str(runs), "--out", str(tmp_path / "u")]) == 0
    assert pd.read_csv(tmp_path / "u" / "seeds.csv").empty
    assert "No seed repeats" in (tmp_path / "u" / "seeds.html").read_text()


def test_the_seeds_table_shows_counts_as_counts_and_each_metric_in_its_own_digits(tmp_path):
    runs = tmp_path / "runs"
    for name, loss, rate in (("lora", 6.2107, 7029.6), ("lora.s2", 6.2035, 6704.8), ("lora.s3", 6.2017, 7217.8)):
        write_run(runs, name, eval_loss=loss, tokens_per_s=rate)
    group = ["lora", "lora.s2", "lora.s3"]
    spec = {"runs": group, "baseline_run": "lora", "profile": "t", "repeats": {"lora": group}}
    assert main(["--spec", json.dumps(spec), "--runs-dir", str(runs), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "seeds.md").read_text()
    row = " ".join(next(line for line in md.splitlines() if "eval loss" in line).split())
    assert "| 6.204 | 6.202 | 6.211 | 0.009 | 3 | 3 |" in row, row  # not 6.20 | ... | 3.00 | 3.00
    assert "7,030" in md and "3.00" not in md
