"""Offload keeps the math: each offload run against its twin, found from the specs, judged per step."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY, write_run

from offloadbench.aggregate import RELATIVE_GROUPS, comparison, html_groups, relative, write_tables
from offloadbench.claims import check_claims
from offloadbench.config import load_config
from offloadbench.resolve import resolve
from offloadbench.spec import run_spec
from offloadbench.twins import compare_twins, find_twins, offloads

TOL = {"fp32": 1e-4, "bf16": 1e-2, "fp16": 1e-2}
C6 = next(c for c in yaml.safe_load((REPO / "configs" / "claims.yaml").read_text())["claims"] if c["id"] == "C6")


def resolved_specs(config: dict, model_config: dict) -> dict[str, dict]:
    return {r["name"]: resolve(run_spec(config, r["name"]), model_config) for r in config["runs"]}


@pytest.mark.parametrize("profile", [None, TINY])
def test_every_offload_run_of_the_profiles_finds_the_run_that_differs_only_by_its_offload(profile):
    config = load_config(*([profile] if profile else []))
    model_config = {"model_type": "llama", **config["model"]["scratch"]}
    twins = find_twins(resolved_specs(config, model_config))
    assert twins == {
        "qlora_paged": "qlora",  # paged AdamW 32-bit -> AdamW
        "qlora_act_offload": "qlora",  # activations kept in host memory -> not
        "qlora_offload": "qlora_zero3",  # ZeRO-3 with CPU offload (and activation offload) -> ZeRO-3
        "zero3_offload_cpu": "zero3",
        "zero3_offload_nvme": "zero3",  # NVMe swap and its scheduling knobs -> ZeRO-3
    }


def test_the_paper_profiles_offload_runs_have_twins_too():
    config = load_config(REPO / "configs" / "paper.yaml")
    specs = {}
    for r in config["runs"]:
        spec = run_spec(config, r["name"])
        specs[r["name"]] = {
            **spec,
            "deepspeed_config": json.loads(open(spec["deepspeed"]).read()) if spec["deepspeed"] else None,
        }
    twins = find_twins(specs)
    assert set(twins) == {r for r, s in specs.items() if offloads(s)}
    assert all(t is not None for t in twins.values()), twins
    # Each seed of qlora_offload has the twin of its own seed (the same data order), never another's.
    seeds = ("", ".s2", ".s3")
    assert [twins[f"qlora_offload{k}"] for k in seeds] == [f"qlora_zero3{k}" for k in seeds]


def test_a_changed_learning_rate_is_not_a_twin():
    config = load_config()
    model_config = {"model_type": "llama", **config["model"]["scratch"]}
    specs = resolved_specs(config, model_config)
    specs["qlora"]["training"]["learning_rate"] *= 2
    assert find_twins(specs)["qlora_paged"] is None


def write_pair(tmp_path, run_losses, twin_losses, run_eval=5.0, twin_eval=5.0, dtype="fp32", twin_status="ok"):
    """An offload run (activation offload) and its twin, with per-step losses."""
    spec = run_spec(load_config(TINY), "qlora")
    offload = {**spec, "run": "qlora_act_offload", "training": {**spec["training"], "activation_offload": True}}
    for run, s, losses, ev, status in (
        ("qlora_act_offload", offload, run_losses, run_eval, "ok"),
        ("qlora", spec, twin_losses, twin_eval, twin_status),
    ):
        write_run(tmp_path, run, spec=s, dtype=dtype, device="cpu", eval_loss=ev, status=status, deepspeed_config=None)
        rows = [{"step": i, "loss": v, "step_time_s": 0.1} for i, v in enumerate(losses, 1)]
        (tmp_path / run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def c6(runs_dir, tolerance=TOL):
    return check_claims([C6], runs_dir, None, ["qlora", "qlora_act_offload"], tolerance)[0]


CURVE = [6.40, 6.21, 6.02, 5.90, 5.81, 5.75]


def test_twins_within_rounding_agree_and_the_claim_passes(tmp_path):
    runs_dir = write_pair(tmp_path, [v + 1.9e-6 for v in CURVE], CURVE, 5.0 + 4.8e-7)
    got = compare_twins(["qlora", "qlora_act_offload"], runs_dir, TOL)["qlora_act_offload"]
    assert got["verdict"] == "agrees" and got["twin"] == "qlora" and got["max_loss_diff"] == pytest.approx(1.9e-6)
    claim = c6(runs_dir)
    assert claim["verdict"] == "PASS" and "1.9e-06" in claim["reason"]


def test_a_run_that_departs_is_named_with_its_step_in_the_table_and_the_claim(tmp_path):
    """The NVMe swapper's bug, as it looked: the same for two steps, then 0.02 apart."""
    departed = CURVE[:2] + [v - 0.02 * (i + 1) for i, v in enumerate(CURVE[2:])]
    runs_dir = write_pair(tmp_path, departed, CURVE)
    twins = compare_twins(["qlora", "qlora_act_offload"], runs_dir, TOL)
    got = twins["qlora_act_offload"]
    assert got["verdict"] == "departs" and got["first_departure_step"] == 3 and got["at_step"] == 6
    table = comparison(["qlora", "qlora_act_offload"], runs_dir, None, twins).set_index("run")
    assert table.loc["qlora_act_offload", "twin verdict"] == "departs (step 3)"
    assert pd.isna(table.loc["qlora", "twin verdict"]), "a run without offload has no twin cell"
    claim = c6(runs_dir)
    assert claim["verdict"] == "FAIL" and "qlora_act_offload" in claim["reason"] and "step 3" in claim["reason"]


def test_eval_loss_alone_can_depart(tmp_path):
    runs_dir = write_pair(tmp_path, CURVE, CURVE, run_eval=5.01)
    assert compare_twins(["qlora", "qlora_act_offload"], runs_dir, TOL)["qlora_act_offload"]["verdict"] == "departs"


def test_bf16_is_judged_by_its_own_looser_tolerance(tmp_path):
    runs_dir = write_pair(tmp_path, [v + 3e-3 for v in CURVE], CURVE, dtype="bf16")
    assert c6(runs_dir)["verdict"] == "PASS"
    assert c6(write_pair(tmp_path / "fp32", [v + 3e-3 for v in CURVE], CURVE))["verdict"] == "FAIL"


def test_fewer_logged_steps_depart_and_a_failed_twin_is_not_compared(tmp_path):
    assert c6(write_pair(tmp_path / "short", CURVE[:4], CURVE))["verdict"] == "FAIL"
    claim = c6(write_pair(tmp_path / "failed", CURVE, CURVE, twin_status="failed"))
    assert claim["verdict"] == "N/A" and "qlora (failed)" in claim["reason"]


def test_no_twin_is_said_not_passed(tmp_path):
    runs_dir = write_pair(tmp_path, CURVE, CURVE)
    twins = compare_twins(["qlora_act_offload"], runs_dir, TOL)
    assert twins["qlora_act_offload"]["verdict"] == "no twin"
    claim = check_claims([C6], runs_dir, None, ["qlora_act_offload"], TOL)[0]
    assert claim["verdict"] == "N/A" and "no run of this profile is the same" in claim["reason"]


def test_every_html_group_of_both_tables_shows_numbers_not_only_the_run(tmp_path):
    runs_dir = write_pair(tmp_path, CURVE, CURVE)
    table = comparison(["qlora", "qlora_act_offload"], runs_dir, None, {})
    rel = relative(table, "qlora")
    groups = html_groups(rel, RELATIVE_GROUPS)
    assert set(groups) == {"Setup", "Memory", "Speed", "Quality"}
    assert all(len(cols) > 1 for cols in groups.values())
    assert {c for cols in groups.values() for c in cols} == set(rel), "every column is shown"
    write_tables(rel, tmp_path / "relative", "caption", RELATIVE_GROUPS)
    page = (tmp_path / "relative.html").read_text()
    assert "saving (x)" in page.split("<h2>Memory</h2>")[1].split("<h2>")[0]
