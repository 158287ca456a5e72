"""A sweep (runs x model sizes x block sizes) expands into runs that train their own model size on
their own data, and the tables and the sweep figure show them."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import TINY, snakemake

pytestmark = pytest.mark.slow

SWEEP = {
    "runs": [{"name": "full", "method": "full"}],
    "baseline_run": "full",
    "model": {"sizes": {"wide": {"hidden_size": 192, "intermediate_size": 384, "num_attention_heads": 6}}},
    "sweep": {"runs": ["full"], "model_sizes": ["base", "wide"], "block_sizes": [32]},
}


def test_sweep_expands_trains_and_aggregates(tmp_path):
    profile = tmp_path / "sweep.yaml"
    profile.write_text(yaml.safe_dump(SWEEP))
    proc = snakemake(tmp_path, "--cores", "2", "--configfile", str(TINY), str(profile))
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = tmp_path / "results"
    table = pd.read_csv(results / "tables" / "comparison.csv").set_index("run")
    assert list(table.index) == ["full", "full.base.b32", "full.wide.b32"]
    assert set(table["status"]) == {"ok"}
    assert list(table["block"]) == [64, 32, 32] and list(table["model size"]) == ["base", "base", "wide"]
    # the wide model is its own, larger model: 192 wide instead of 128
    assert table.loc["full.wide.b32", "params (M)"] > table.loc["full.base.b32", "params (M)"]
    assert table.loc["full.base.b32", "params (M)"] == table.loc["full", "params (M)"]
    wide = json.loads((results / "runs" / "full.wide.b32" / "summary.json").read_text())
    assert wide["spec"]["model"]["path"].endswith("models/tiny-test-llama-wide")
    assert json.loads((results / "data" / "pydoc-topics-b32" / "manifest.json").read_text())["block_size"] == 32
    for name in ("sweep.png", "sweep.pdf"):
        assert (results / "figures" / name).stat().st_size > 1000
    claims = json.loads((results / "claims.json").read_text())["claims"]
    c5 = next(c for c in claims if c["id"] == "C5")
    assert c5["runs"] == ["full"], "claims compare the profile's own runs with the base model, not sweep points"
