"""Claims: PASS, FAIL and N/A from run summaries, never a GPU verdict without a GPU."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import GIB, REPO, validate, write_run

from offloadbench.claims import check_claims, main

CLAIMS = yaml.safe_load((REPO / "configs" / "claims.yaml").read_text())["claims"]
BY_ID = {c["id"]: c for c in CLAIMS}
RUNS = ["full", "lora", "qlora", "qlora_zero3", "qlora_offload", "zero3_offload_cpu", "zero3_offload_nvme"]
BASE = {"eval_loss": 3.0, "eval_ppl": 20.0}


def gpu_runs(tmp_path, **per_run):
    """A paper-like set of GPU runs; per_run overrides fields of single runs."""
    defaults = {
        "full": {"method": "full", "status": "oom", "gpu_allocated_peak_bytes": 79 * GIB, "eval_ppl": None},
        "lora": {"gpu_allocated_peak_bytes": 18 * GIB, "tokens_per_s": 2000.0, "eval_ppl": 8.0},
        "qlora": {"method": "qlora", "gpu_allocated_peak_bytes": 7 * GIB, "tokens_per_s": 1500.0, "eval_ppl": 8.2},
        "qlora_zero3": {
            "method": "qlora",
            "gpu_allocated_peak_bytes": 6 * GIB,
            "tokens_per_s": 1400.0,
            "eval_ppl": 8.2,
        },
        "qlora_offload": {
            "method": "qlora",
            "gpu_allocated_peak_bytes": 4 * GIB,
            "gpu_nvml_used_peak_bytes": 5 * GIB,
            "tokens_per_s": 900.0,
            "eval_ppl": 8.2,
            "offload": "params:cpu+optimizer:cpu+activations:cpu",
            "offload_observed": "params:cpu+optimizer:cpu+activations:cpu",
        },
        "zero3_offload_cpu": {
            "method": "full",
            "gpu_allocated_peak_bytes": 12 * GIB,
            "host_rss_peak_bytes": 150 * GIB,
            "host_rss_above_baseline_bytes": 146 * GIB,
            "tokens_per_s": 300.0,
            "eval_ppl": 7.5,
        },
        "zero3_offload_nvme": {
            "method": "full",
            "host_rss_peak_bytes": 40 * GIB,
            "host_rss_above_baseline_bytes": 36 * GIB,
            "tokens_per_s": 120.0,
            "eval_ppl": 7.5,
        },
    }
    for run, fields in defaults.items():
        write_run(tmp_path, run, **{**fields, **per_run.get(run, {})})
    return tmp_path


def verdicts(runs_dir, base=BASE, runs=RUNS):
    return {r["id"]: r for r in check_claims(CLAIMS, runs_dir, base, runs)}


def test_paper_like_gpu_results_pass_every_claim_but_c5_for_the_oom_run(tmp_path):
    results = verdicts(gpu_runs(tmp_path))
    assert {k: v["verdict"] for k, v in results.items()} == {
        "C1": "PASS",
        "C2": "PASS",
        "C3": "PASS",
        "C4": "PASS",
        "C5": "N/A",
        "C6": "N/A",
        "C7": "N/A",
    }
    assert "no results for qlora_mem, lora_mem" in results["C7"]["reason"], "the paper profile has no memory-scale pair"
    assert "full (oom)" in results["C5"]["reason"]
    assert "full (oom)" in results["C6"]["reason"], "a run that did not finish cannot be compared with a twin"
    c1 = results["C1"]["numbers"]
    assert c1["gpu_allocated_peak_bytes: qlora_offload / lora"]["ratio"] == pytest.approx(4 / 18)
    assert c1["gpu_allocated_peak_bytes: qlora_offload / full"]["full"] == "oom"
    assert "full ran out of accelerator memory" in results["C1"]["reason"]


def test_c5_passes_when_every_finished_run_beats_the_base(tmp_path):
    results = verdicts(gpu_runs(tmp_path), runs=[r for r in RUNS if r != "full"])
    assert results["C5"]["verdict"] == "PASS"
    assert results["C5"]["numbers"]["base"] == 20.0


def test_failures_are_reported_with_the_offending_numbers(tmp_path):
    runs_dir = gpu_runs(
        tmp_path,
        qlora_offload={"gpu_allocated_peak_bytes": 12 * GIB, "tokens_per_s": 1390.0},
        full={"status": "ok", "eval_ppl": 25.0},
    )
    results = verdicts(runs_dir)
    assert results["C1"]["verdict"] == "FAIL" and "0.67x lora" in results["C1"]["reason"]
    assert results["C2"]["verdict"] == "FAIL"
    assert results["C3"]["verdict"] == "FAIL" and "full: ok" in results["C3"]["reason"]
    assert results["C5"]["verdict"] == "FAIL" and "full" in results["C5"]["reason"]


def test_gpu_claims_on_cpu_runs_are_not_applicable_never_faked(tmp_path):
    runs_dir = gpu_runs(tmp_path, **{r: {"device": "cpu", "gpu_allocated_peak_bytes": None} for r in RUNS})
    results = verdicts(runs_dir)
    assert results["C1"]["verdict"] == "N/A" and "CPU" in results["C1"]["reason"]
    assert results["C3"]["verdict"] == "N/A"
    assert results["C2"]["verdict"] == "N/A", "no host-device copy on a CPU: nothing for offload to cost"
    assert "no host-device copy" in results["C2"]["reason"] and "CPU" in results["C2"]["reason"]
    assert results["C4"]["verdict"] == "PASS", "NVMe against host memory is measurable on a CPU"


def test_an_offload_that_did_not_take_effect_cannot_pass_c2(tmp_path):
    """The engine put nothing off the accelerator (observed), though the config asked: N/A, naming it."""
    results = verdicts(gpu_runs(tmp_path, qlora_offload={"offload_observed": "none"}))
    assert results["C2"]["verdict"] == "N/A" and "did not take effect" in results["C2"]["reason"]
    assert verdicts(gpu_runs(tmp_path / "ok"))["C2"]["verdict"] == "PASS"


def test_missing_runs_and_base_make_claims_not_applicable(tmp_path):
    write_run(tmp_path, "lora")
    results = verdicts(tmp_path, base=None, runs=["lora"])
    assert all(r["verdict"] == "N/A" for r in results.values())
    assert "qlora_offload" in results["C1"]["reason"] and "base model" in results["C5"]["reason"]


def test_main_writes_json_matching_the_schema_and_markdown(tmp_path):
    runs_dir = gpu_runs(tmp_path / "runs")
    base = tmp_path / "base.json"
    base.write_text(json.dumps(BASE))
    out = tmp_path / "claims.json"
    args = [
        "--claims",
        str(REPO / "configs" / "claims.yaml"),
        "--runs-dir",
        str(runs_dir),
        "--base",
        str(base),
        "--profile",
        "paper",
        "--runs",
        *RUNS,
        "--out",
        str(out),
    ]
    assert main(args) == 0
    validate(json.loads(out.read_text()), "claims.schema.json")
    md = (tmp_path / "claims.md").read_text()
    assert md.count("| C") == len(CLAIMS) and "**PASS**" in md


def _paper_spec(run):
    from offloadbench.config import load_config
    from offloadbench.spec import run_spec

    spec = run_spec(load_config(REPO / "configs" / "paper.yaml"), run)
    spec["model"] = {**spec["model"], "path": str(REPO / "configs" / "models" / "llama-3.1-8b.json")}
    return spec


def test_c3_reports_the_memory_models_prediction_beside_the_measurement(tmp_path):
    """Llama-3.1-8B: full fine-tuning is predicted not to fit 80 GiB, ZeRO-3 CPU offload to fit."""
    gpu = {"gpu_memory_bytes": 80 * GIB}
    runs = gpu_runs(
        tmp_path,
        full={"spec": _paper_spec("full"), "hardware": gpu},
        zero3_offload_cpu={"spec": _paper_spec("zero3_offload_cpu"), "hardware": gpu},
    )
    (c3,) = check_claims([BY_ID["C3"]], runs, BASE, RUNS)
    assert c3["verdict"] == "PASS"
    assert "predicted for this profile's models: zero3_offload_cpu fits 80 GiB, full would not" in c3["reason"]
    assert c3["numbers"]["full: predicted accelerator bytes"] > 80 * GIB
    assert c3["numbers"]["zero3_offload_cpu: predicted accelerator bytes"] < 80 * GIB


def test_c3_on_a_model_that_fits_anyway_says_there_is_nothing_to_rescue(tmp_path):
    from offloadbench.config import load_config
    from offloadbench.spec import run_spec

    config = load_config()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"model_type": "llama", **config["model"]["scratch"], "tie_word_embeddings": False}))
    runs = tmp_path / "runs"
    for run in ("full", "zero3_offload_cpu"):
        spec = run_spec(config, run)
        spec["model"]["path"] = str(cfg)
        write_run(runs, run, device="cpu", method="full", spec=spec, hardware={"gpu_memory_bytes": None})
    (c3,) = check_claims([BY_ID["C3"]], runs, BASE, RUNS)
    assert c3["verdict"] == "N/A"
    assert "ran on the CPU" in c3["reason"] and "full already fits 80 GiB" in c3["reason"]


@pytest.mark.parametrize(("qlora_mib", "verdict"), [(120, "PASS"), (300, "FAIL")])
def test_c7_compares_what_the_4bit_and_the_fp32_base_add_to_the_runtime(tmp_path, qlora_mib, verdict):
    """On a CPU the memory-scale pair's weights live in host memory: 103 M fp32 parameters are ~400
    MiB above the runtime; their NF4 copy ~120 MiB. A QLoRA that kept an unquantized base would add
    about as much as LoRA and FAIL; the raw peaks (runtime included) are not what is compared."""
    cpu = {"device": "cpu", "gpu_allocated_peak_bytes": None}
    write_run(tmp_path, "lora_mem", method="lora", host_rss_peak_bytes=900 * 2**20,
              host_rss_above_baseline_bytes=400 * 2**20, **cpu)  # fmt: skip
    write_run(tmp_path, "qlora_mem", method="qlora", host_rss_peak_bytes=(500 + qlora_mib) * 2**20,
              host_rss_above_baseline_bytes=qlora_mib * 2**20, **cpu)  # fmt: skip
    (got,) = check_claims([BY_ID["C7"]], tmp_path, BASE, ["lora_mem", "qlora_mem"])
    assert got["verdict"] == verdict, got["reason"]
    assert got["numbers"]["host_rss_above_baseline_bytes: qlora_mem / lora_mem"]["ratio"] == pytest.approx(
        qlora_mib / 400
    )


def test_a_host_that_ran_out_of_memory_is_not_an_accelerator_oom(tmp_path):
    """C3 PASSes on full's accelerator OOM; the same run stopped by host memory tested no card (N/A),
    and C1 no longer counts it as "needed more than the accelerator has"."""
    results = verdicts(gpu_runs(tmp_path, full={"status": "host_oom"}))
    assert results["C3"]["verdict"] == "N/A" and "ran out of host memory" in results["C3"]["reason"]
    assert results["C1"]["verdict"] == "N/A" and "full (host_oom)" in results["C1"]["reason"]
    assert verdicts(gpu_runs(tmp_path / "gpu"))["C3"]["verdict"] == "PASS"


def test_c5_needs_the_drop_it_names_so_a_run_that_barely_trained_fails(tmp_path):
    """min_drop 5%: a run 1% below the base model (LoRA on q/v at r 8 here, or a run at learning rate
    0 plus noise) FAILs, naming its drop; each run's drop is in the numbers."""
    results = verdicts(gpu_runs(tmp_path, lora={"eval_ppl": 19.8}, full={"status": "ok", "eval_ppl": 9.0}))
    c5 = results["C5"]
    assert c5["verdict"] == "FAIL" and "not at least 5% below" in c5["reason"] and "lora (1.0%)" in c5["reason"]
    assert c5["numbers"]["lora"]["drop"] == pytest.approx(0.01)
    ok = verdicts(gpu_runs(tmp_path / "ok", full={"status": "ok", "eval_ppl": 9.0}))["C5"]
    assert ok["verdict"] == "PASS" and "drops from 55.0% (full) to 62.5% (" in ok["reason"], ok["reason"]


def test_claims_expected_not_to_pass_on_a_cpu_say_so_and_why(tmp_path):
    """The default profile on a CPU: C1-C3 are N/A, as configs/claims.yaml expects, and claims.md and
    claims.html say why beside the verdict; nothing is flagged."""
    from offloadbench.claims import to_html, to_markdown

    runs_dir = gpu_runs(tmp_path, **{r: {"device": "cpu", "gpu_allocated_peak_bytes": None} for r in RUNS})
    results = check_claims(CLAIMS, runs_dir, BASE, RUNS, profile="default")
    by_id = {r["id"]: r for r in results}
    for cid in ("C1", "C2", "C3"):
        assert by_id[cid]["verdict"] == "N/A" and by_id[cid]["as_expected"], by_id[cid]
        assert by_id[cid]["expected"]["verdict"] == "N/A" and by_id[cid]["expected"]["when"] == "on a CPU"
    assert by_id["C4"]["expected"] == {"verdict": "PASS", "why": None, "when": None} and by_id["C4"]["as_expected"]
    md = to_markdown("default", results)
    assert "| expected |" in md
    assert "| C1 | **N/A** | N/A on a CPU: no GPU, so no accelerator memory is measured" in md
    assert "no host-device copy whose cost the claim is about" in md
    page = to_html("default", results)
    assert "<b>Expected.</b> N/A on a CPU: no GPU" in page
    for cid in ("C1", "C2", "C3"):
        assert f'<h2>{cid}: <span class="NA">N/A</span> <span class="expected">expected on a CPU</span></h2>' in page


def test_a_verdict_other_than_the_expected_one_is_flagged_unexpected(tmp_path):
    """The default profile on a GPU: its 1.8 M-parameter full run fits, so C3 is expected to FAIL.
    A fake result where full ran out of accelerator memory PASSes C3, which must stand out; so must a
    claim expected to PASS that did not (C5 here, full did not finish)."""
    from offloadbench.claims import to_html, to_markdown

    results = check_claims(CLAIMS, gpu_runs(tmp_path), BASE, RUNS, profile="default")
    by_id = {r["id"]: r for r in results}
    assert by_id["C3"]["verdict"] == "PASS" and by_id["C3"]["expected"]["verdict"] == "FAIL"
    assert by_id["C3"]["as_expected"] is False
    assert by_id["C5"]["verdict"] == "N/A" and by_id["C5"]["as_expected"] is False
    assert by_id["C1"]["as_expected"] and by_id["C1"]["expected"]["verdict"] == "PASS", "on a GPU C1 should PASS"
    md = to_markdown("default", results)
    assert "| C3 | **PASS** | **unexpected: expected FAIL on a GPU on the default profile: the default" in md
    assert "Unexpected: C3 (PASS, expected FAIL), C5 (N/A, expected PASS)" in md
    page = to_html("default", results)
    assert 'C3: <span class="PASS">PASS</span> <span class="unexpected">unexpected: expected FAIL</span>' in page
    assert '<p class="unexpected">Unexpected: C3 (PASS, expected FAIL)' in page
    # the paper profile has no memory-scale pair: C7's N/A is expected there
    paper = {r["id"]: r for r in check_claims(CLAIMS, gpu_runs(tmp_path / "paper"), BASE, RUNS, profile="paper")}
    assert paper["C7"]["verdict"] == "N/A" and paper["C7"]["as_expected"]
    assert paper["C3"]["as_expected"], "the default profile's expected FAIL is not the paper profile's"


@pytest.mark.parametrize(
    "entry",
    [
        {"device": "cpu", "verdict": "PASS", "why": "x"},  # PASS is what no entry means
        {"device": "tpu", "verdict": "N/A", "why": "x"},
        {"verdict": "N/A", "why": "on every machine"},  # neither device nor profile
        {"device": "cpu", "verdict": "N/A"},  # no why
    ],
)
def test_the_claims_schema_checks_expected_entries(tmp_path, entry):
    from offloadbench.claims_file import load_claims
    from offloadbench.errors import ConfigError

    doc = {"claims": [{**BY_ID["C1"], "expected": [entry]}]}
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="expected"):
        load_claims(path)
    path.write_text(
        yaml.safe_dump({"claims": [{**BY_ID["C1"], "expected": [{"device": "cpu", "verdict": "N/A", "why": "x"}]}]})
    )
    assert load_claims(path)[0]["expected"][0]["verdict"] == "N/A"


def test_a_verdict_says_what_it_rests_on_and_c5_gives_the_seed_spread(tmp_path):
    from offloadbench.claims import check_below_base, rests_on

    base = {"eval_ppl": 100.0}
    for run, ppl, of in (
        ("lora", 80.0, None),
        ("lora.s2", 82.0, "lora"),
        ("lora.s3", 79.0, "lora"),
        ("full", 50.0, None),
    ):
        spec = {"model_size": "base", **({"repeat_of": of} if of else {})}
        write_run(tmp_path, run, eval_ppl=ppl, spec=spec)
    runs = ["full", "lora", "lora.s2", "lora.s3"]
    claim = {"id": "C5", "check": "below_base", "runs": "all", "metric": "eval_ppl", "min_drop": 0.05}
    verdict, reason, numbers = check_below_base(claim, tmp_path, base, runs)
    assert verdict == "PASS" and "over seeds: lora 18.0%–21.0% (n = 3)" in reason
    assert rests_on(tmp_path, runs, numbers) == "4 runs (lora over 3 seeds)"
    # One seed that did not learn fails the claim, however good the others are.
    (tmp_path / "lora.s3").rename(tmp_path / "old")
    write_run(tmp_path, "lora.s3", eval_ppl=99.0, spec={"model_size": "base", "repeat_of": "lora"})
    verdict, reason, _ = check_below_base(claim, tmp_path, base, runs)
    assert verdict == "FAIL" and "lora.s3 (1.0%)" in reason
    speed = {"tokens_per_s": {"steps": [5, 7], "ratio": 0.5}}
    assert rests_on(tmp_path, ["full", "lora"], speed) == "2 runs; speed on 5 and 7 timed steps"
