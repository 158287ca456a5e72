"""numbers.tex: one LaTeX macro per headline number, parsed back and held against the tables."""

from __future__ import annotations

import csv
import json
import re

import pytest
from conftest import REPO

from offloadbench.numbers import macro_name, macros, main

REF = REPO / "results" / "reference" / "default"
MACRO = re.compile(r"^\\newcommand\{(\\ob[A-Za-z]+)\}\{([^{}]*)\}$")


def parse(text: str) -> dict[str, str]:
    """Every non-comment line must be one \\newcommand with a letters-only name and a brace-free value."""
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("%"):
            continue
        m = MACRO.match(line)
        assert m, f"not a well-formed macro line: {line!r}"
        assert m.group(1) not in out, f"{m.group(1)} defined twice"
        out[m.group(1)] = m.group(2)
    return out


def test_macros_of_the_reference_run_are_its_tables_numbers(tmp_path):
    out = tmp_path / "numbers.tex"
    assert main(["--table", str(REF / "comparison.csv"), "--claims", str(REF / "claims.json"), "--out", str(out)]) == 0
    got = parse(out.read_text())
    rows = {r["run"]: r for r in csv.DictReader((REF / "comparison.csv").open())}
    claims = {c["id"]: c for c in json.loads((REF / "claims.json").read_text())["claims"]}
    for run, row in rows.items():
        assert got[macro_name(run, "HostPeakGiB")] == f"{float(row['host RSS peak (GiB)']):.2f}"
        assert got[macro_name(run, "EvalPpl")] == f"{float(row['eval ppl']):.1f}"
        assert got[macro_name(run, "GpuPeakGiB")] == "--", "a CPU run has no GPU number"
    assert got["\\obZeroThreeOffloadNvmeTokensPerS"] == f"{float(rows['zero3_offload_nvme']['tokens/s']):,.0f}"
    for cid, claim in claims.items():
        assert got[macro_name(cid, "Verdict")] == claim["verdict"].replace("%", "\\%")
    for key, value in claims["C4"]["numbers"].items():  # e.g. host_rss_above_baseline_bytes: nvme / cpu
        metric = key.split(": ")[0].replace("_bytes", "")
        assert got[macro_name("C4", "Ratio", metric, "zero3_offload_cpu")] == f"{value['ratio']:.2f}"


def test_names_spell_digits_and_collisions_are_refused():
    assert macro_name("zero3_offload_cpu", "HostPeakGiB") == "\\obZeroThreeOffloadCpuHostPeakGiB"
    assert macro_name("C12", "Verdict") == "\\obCOneTwoVerdict"
    with pytest.raises(ValueError, match="already taken"):
        macros([{"run": "q_lora"}, {"run": "qLora"}], [])
