"""End to end: the tiny profile through Snakemake, every method and offload of configs/config.yaml.

One workflow run (the ``tiny_workflow`` fixture, ~3 minutes on 2 cores) feeds every test here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

import datasets
import pytest
import torch
from conftest import BIN, FAKE_TOKEN, REPO, TINY, dead_canaries, read_jsonl, snakemake, tiny_configfiles, validate
from safetensors.torch import load_file

from offloadbench.config import load_config

pytestmark = pytest.mark.slow

CONFIG = load_config(TINY)
RUNS = [r["name"] for r in CONFIG["runs"]]
STEPS = CONFIG["training"]["max_steps"]

# The first four logged losses of each run on the tiny profile (CPU, fp32, seed 1234), recorded
# from a real run. Methods that compute the same thing share a curve: ZeRO-3 and its offloads
# reproduce plain full fine-tuning; offloading and the CPU fallback of the paged optimizer
# reproduce QLoRA.
PINNED = {
    "full": [7.5405, 7.1696, 7.1652, 7.0709],
    "lora": [7.5405, 7.1696, 7.1623, 7.2495],
    "qlora": [7.541, 7.1692, 7.1614, 7.2483],
}
SAME_AS = {
    "zero3": "full",
    "zero3_offload_cpu": "full",
    "zero3_offload_nvme": "full",
    "qlora_paged": "qlora",
    "qlora_act_offload": "qlora",
    "qlora_offload": "qlora",
    "qlora_zero3": "qlora",
}


def summary(workdir, run):
    return json.loads((workdir / "results" / "runs" / run / "summary.json").read_text())


def metrics(workdir, run):
    return read_jsonl(workdir / "results" / "runs" / run / "metrics.jsonl")


def tiny_spec(workdir, run: str, **training) -> dict:
    """The resolved spec of a tiny-profile run, pointed at the workflow's base model."""
    from offloadbench.spec import run_spec

    spec = run_spec(CONFIG, run)
    spec["model"]["path"] = str(workdir / "results" / "models" / "tiny-test-llama")
    spec["training"].update(training)
    return spec


def train_command(workdir, spec: dict, out) -> list[str]:
    """The command the train rule runs for this spec, resolved as the resolve rule resolves it."""
    from offloadbench.launch import train_argv
    from offloadbench.resolve import resolve_spec

    return train_argv(resolve_spec(spec), workdir / "results" / "data" / "pydoc-topics", out)


def test_every_output_matches_its_schema(tiny_workflow):
    results = tiny_workflow / "results"
    for manifest in results.glob("corpus/*/manifest.json"):
        validate(json.loads(manifest.read_text()), "corpus_manifest.schema.json")
    manifests = list(results.glob("data/*/manifest.json"))
    assert len(manifests) == 2, "fine-tuning data and pretraining corpus"
    for manifest in manifests:
        validate(json.loads(manifest.read_text()), "data_manifest.schema.json")
    for run in RUNS:
        validate(summary(tiny_workflow, run), "summary.schema.json")
        for row in metrics(tiny_workflow, run):
            validate(row, "metrics.schema.json")
    validate(json.loads((results / "pretrain" / "tiny-test-llama" / "summary.json").read_text()), "summary.schema.json")


@pytest.mark.parametrize("run", RUNS)
def test_run_trains_every_step_and_the_loss_falls(tiny_workflow, run):
    s, rows = summary(tiny_workflow, run), metrics(tiny_workflow, run)
    assert s["status"] == "ok" and s["error"] is None
    assert s["steps"] == STEPS and [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert s["tokens_seen"] == STEPS * 2 * 2 * 64 == rows[-1]["tokens"]
    losses = [r["loss"] for r in rows]
    # Each step's loss is on other blocks: across batches it varies by ~0.3 nats here, more than 8
    # steps of adapters gain (a LoRA run starts as the base model: lora.s2's first batch happened to
    # be easy). Full fine-tuning falls faster than that noise; every run, adapters and every seed
    # included, must end below the base model on the same validation blocks.
    if s["method"] == "full":
        assert sum(losses[-3:]) / 3 < losses[0] - 0.05, losses
    base = json.loads((tiny_workflow / "results" / "eval" / "base.json").read_text())["eval_loss"]
    assert s["eval_loss"] < base, (s["eval_loss"], base)
    assert s["eval_ppl"] == pytest.approx(math.exp(s["eval_loss"]))
    assert s["device"] == "cpu" and s["dtype"] == "fp32"
    assert s["gpu_allocated_peak_bytes"] is None and s["gpu_nvml_used_peak_bytes"] is None
    assert s["host_rss_peak_bytes"] > 100 * 2**20
    assert s["tokens_per_s"] > 0 and s["checkpoint_bytes"] > 0
    assert not (tiny_workflow / "results" / "runs" / run / "checkpoints").exists(), "resume points left behind"


@pytest.mark.parametrize("run", sorted(PINNED))
def test_early_losses_match_the_recorded_values(tiny_workflow, run):
    losses = [r["loss"] for r in metrics(tiny_workflow, run)[:4]]
    assert losses == pytest.approx(PINNED[run], abs=2e-3)


@pytest.mark.parametrize("run", sorted(SAME_AS))
def test_offloading_does_not_change_what_is_computed(tiny_workflow, run):
    mine = [r["loss"] for r in metrics(tiny_workflow, run)]
    reference = [r["loss"] for r in metrics(tiny_workflow, SAME_AS[run])]
    assert mine == pytest.approx(reference, abs=2e-3)
    assert summary(tiny_workflow, run)["eval_loss"] == pytest.approx(
        summary(tiny_workflow, SAME_AS[run])["eval_loss"], abs=2e-3
    )


def test_offload_is_recorded_as_configured(tiny_workflow):
    expected = {
        "full": "none",
        "lora": "none",
        "qlora": "none",
        "qlora_paged": "optimizer:paged",
        "qlora_act_offload": "activations:cpu",
        "qlora_offload": "params:cpu+optimizer:cpu+activations:cpu",
        "qlora_zero3": "none",
        "zero3": "none",
        "zero3_offload_cpu": "params:cpu+optimizer:cpu",
        "zero3_offload_nvme": "params:nvme+optimizer:nvme",
        "lora_mem": "none",
        "qlora_mem": "none",
        "lora.s2": "none",
        "lora.s3": "none",
    }
    assert {run: summary(tiny_workflow, run)["offload"] for run in RUNS} == expected
    assert "not supported on CPU" in summary(tiny_workflow, "qlora_paged")["optimizer_fallback"]
    nvme = summary(tiny_workflow, "zero3_offload_nvme")
    assert nvme["nvme_bytes_written"] > 2**20, "NVMe offload wrote nothing"
    assert summary(tiny_workflow, "zero3_offload_cpu")["nvme_bytes_written"] is None
    # DeepSpeed locked (mlock) at least the swap buffers the resolved spec names as the run's need,
    # which the job compares with ulimit -l before it starts; runs without NVMe lock nothing.
    need = json.loads((tiny_workflow / "results" / "specs" / "zero3_offload_nvme.json").read_text())["locked_bytes"]
    assert need["cpu"] > 8 * 2**20, "more than Docker's default 8 MiB limit: the case the preflight is for"
    assert need["cpu"] <= nvme["host_locked_peak_bytes"] <= 2 * need["cpu"], (need, nvme["host_locked_peak_bytes"])
    assert summary(tiny_workflow, "zero3_offload_cpu")["host_locked_peak_bytes"] == 0
    # The run's own swap folder inside the user's nvme_dir is gone; the folder and its file stay.
    assert sorted(p.name for p in (tiny_workflow / "fast-disk").iterdir()) == ["canary.txt"]
    assert not (tiny_workflow / "results" / "runs" / "zero3_offload_nvme" / "nvme_swap.json").exists()


def test_seed_repeats_train_with_their_own_seed_and_the_seeds_table_gives_the_spread(tiny_workflow):
    """lora trains with 3 seeds (configs/config.yaml): the repeats differ from it by the seed only,
    so their first loss (the base model on other batches, with other initial adapters) differs;
    results/tables/seeds.csv gives the median, range and n that the tables and C5 use."""
    import pandas as pd

    runs = ["lora", "lora.s2", "lora.s3"]
    seeds = [summary(tiny_workflow, r)["spec"]["seed"] for r in runs]
    assert seeds == [CONFIG["seed"], CONFIG["seed"] + 1, CONFIG["seed"] + 2]
    first = [metrics(tiny_workflow, r)[0]["loss"] for r in runs]
    assert len(set(first)) == 3, f"the seeds drew the same batches: {first}"
    table = pd.read_csv(tiny_workflow / "results" / "tables" / "seeds.csv")
    loss = table[(table["run"] == "lora") & (table["metric"] == "eval loss")].iloc[0]
    evals = [summary(tiny_workflow, r)["eval_loss"] for r in runs]
    assert (loss["n"], loss["of"]) == (3, 3)
    assert loss["median"] == pytest.approx(sorted(evals)[1]) and loss["range"] == pytest.approx(max(evals) - min(evals))
    assert loss["range"] > 0, "three seeds, one eval loss: the repeats did not change the seed"
    comparison = pd.read_csv(tiny_workflow / "results" / "tables" / "comparison.csv").set_index("run")
    assert list(comparison.loc[runs, "seed"]) == seeds


def test_what_was_in_effect_is_observed_not_echoed_from_the_config(tiny_workflow):
    """On this CPU: the paged optimizer fell back and activation offload copied nothing, and the
    tables say so; ZeRO-3's own flags show where the engine put state; every QLoRA path, the
    partitioned ZeRO-3 base included, trained 4-bit weights."""
    import pandas as pd

    observed = {run: summary(tiny_workflow, run)["observed"]["offload"] for run in RUNS}
    assert observed["qlora_paged"]["optimizer"] == "none"
    assert summary(tiny_workflow, "qlora_paged")["observed"]["optimizer"]["paged_requested"] is True
    assert summary(tiny_workflow, "qlora_paged")["observed"]["optimizer"]["paged_state_bytes"] == 0
    assert observed["qlora_act_offload"]["activations"] == "none"
    assert summary(tiny_workflow, "qlora_act_offload")["observed"]["activation_bytes_to_host"] == 0
    assert summary(tiny_workflow, "qlora")["observed"]["activation_bytes_to_host"] is None
    assert observed["zero3_offload_cpu"] == {"params": "cpu", "optimizer": "cpu", "activations": "none"}
    assert observed["zero3_offload_nvme"] == {"params": "nvme", "optimizer": "nvme", "activations": "none"}
    assert observed["zero3"] == observed["qlora_zero3"] == observed["full"] == {k: "none" for k in observed["full"]}
    zero = summary(tiny_workflow, "zero3_offload_cpu")["observed"]["zero"]
    assert zero["stage"] == 3 and zero["optimizer_class"].endswith("DeepSpeedCPUAdam")
    for run in ("qlora", "qlora_paged", "qlora_act_offload", "qlora_offload", "qlora_zero3"):
        four_bit = summary(tiny_workflow, run)["observed"]["four_bit"]
        # Every Linear of the base but lm_head: q, k, v, o, gate, up, down in each of the 2 layers.
        assert four_bit["count"] == 7 * 2, f"{run}: {four_bit}"
    assert summary(tiny_workflow, "qlora")["observed"]["four_bit"]["storage_dtypes"] == ["uint8"]
    assert summary(tiny_workflow, "lora")["observed"]["four_bit"] is None
    cells = pd.read_csv(tiny_workflow / "results" / "tables" / "comparison.csv").set_index("run")["offload"]
    assert cells["qlora_paged"] == "optimizer:paged → not paged (no CUDA)"
    assert cells["qlora_act_offload"] == "activations:cpu → no copy (already in host memory)"
    assert cells["zero3_offload_nvme"] == "params:nvme+optimizer:nvme"
    ds = summary(tiny_workflow, "zero3_offload_nvme")["deepspeed_config"]
    assert ds["zero_optimization"]["offload_param"]["nvme_path"].startswith(str(tiny_workflow / "fast-disk"))
    assert ds["train_batch_size"] == 2 * 2 and "auto" not in json.dumps(ds).replace('"enabled": "auto"', "")


def test_every_folder_of_the_user_survives_the_workflow(tiny_workflow):
    assert not dead_canaries(tiny_workflow)


def test_parameter_counts(tiny_workflow):
    full, lora, qlora = (summary(tiny_workflow, r) for r in ("full", "lora", "qlora"))
    assert full["params_trainable"] == full["params_total"]
    assert lora["params_trainable"] == qlora["params_trainable"] < 0.05 * lora["params_total"]
    assert lora["params_total"] == qlora["params_total"] == full["params_total"] + lora["params_trainable"]
    assert summary(tiny_workflow, "zero3")["params_total"] == full["params_total"]
    assert summary(tiny_workflow, "qlora_offload")["params_total"] == qlora["params_total"]


def _eval_loss(model, workdir) -> float:
    data = datasets.load_from_disk(str(workdir / "results" / "data" / "pydoc-topics"))["validation"]
    ids = torch.tensor(data["input_ids"], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        return float(sum(model(input_ids=b, labels=b).loss * len(b) for b in ids.split(4)) / len(ids))


FULL_RUNS = [r["name"] for r in CONFIG["runs"] if r["method"] == "full"]
ADAPTER_RUNS = [r["name"] for r in CONFIG["runs"] if r["method"] != "full"]


@pytest.mark.parametrize("run", FULL_RUNS)
def test_full_checkpoint_reloads_and_reproduces_eval_loss(tiny_workflow, run):
    from transformers import AutoModelForCausalLM

    path = tiny_workflow / "results" / "runs" / run / "model"
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    base = load_file(str(tiny_workflow / "results" / "models" / "tiny-test-llama" / "model.safetensors"))
    tuned = model.state_dict()
    changed = [k for k, v in base.items() if not torch.equal(v, tuned[k])]
    assert len(changed) == len(base), "some weights did not train"
    assert _eval_loss(model, tiny_workflow) == pytest.approx(summary(tiny_workflow, run)["eval_loss"], abs=1e-3)


@pytest.mark.parametrize("run", ADAPTER_RUNS)
def test_adapter_trained_merges_and_reproduces_eval_loss(tiny_workflow, run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    adapter = tiny_workflow / "results" / "runs" / run / "model"
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero: it did not train"
    base_path = tiny_workflow / "results" / "models" / "tiny-test-llama"
    if CONFIG["runs"][RUNS.index(run)]["method"] == "lora":
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), adapter).merge_and_unload()
        assert not any("lora" in n for n, _ in model.named_parameters()), "adapter was not merged"
    else:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32,
        )
        base = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=quant, device_map={"": "cpu"})
        for module in base.modules():
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
        model = PeftModel.from_pretrained(base, adapter)
    assert _eval_loss(model, tiny_workflow) == pytest.approx(summary(tiny_workflow, run)["eval_loss"], abs=1e-3)


def test_same_seed_repeats_the_loss_curve(tiny_workflow, tmp_path):
    """Determinism on CPU: training the lora run again gives the identical curve."""
    import subprocess

    proc = subprocess.run(
        train_command(tiny_workflow, tiny_spec(tiny_workflow, "lora"), tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": str(summary(tiny_workflow, "lora")["threads"])},  # as the rule ran it
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = [r["loss"] for r in read_jsonl(tmp_path / "metrics.jsonl")]
    assert again == [r["loss"] for r in metrics(tiny_workflow, "lora")]


def test_the_recorder_switched_off_trains_the_same_run_unmeasured(tiny_workflow, tmp_path):
    """benchmarks/overhead.py's "off" side (OFFLOADBENCH_RECORDER=off) must train exactly what the
    workflow trains, minus the measurements, or the overhead it reports compares different work."""
    import subprocess

    proc = subprocess.run(
        train_command(tiny_workflow, tiny_spec(tiny_workflow, "lora"), tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "2", "OFFLOADBENCH_RECORDER": "off"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    off, on = json.loads((tmp_path / "summary.json").read_text()), summary(tiny_workflow, "lora")
    assert (off["recorder"], on["recorder"]) == ("off", "on")
    assert off["steps"] == on["steps"] and off["eval_loss"] == on["eval_loss"]
    assert off["train_loss_final"] == on["train_loss_final"]
    assert read_jsonl(tmp_path / "metrics.jsonl") == [], "no per-step lines without the recorder"
    assert off["train_s"] > 0 and off["tokens_per_s"] > 0
    assert off["recorder_cost"]["share"] is None and off["startup_s"] > 0


def test_every_run_says_what_measuring_it_cost(tiny_workflow):
    """The recorder's own time inside training, the job's start-up before the model loads
    (interpreter and imports: seconds, never nothing) and the set-up between the model loaded and
    training (Trainer, optimizer, engine), in each summary and the comparison table."""
    import pandas as pd

    table = pd.read_csv(tiny_workflow / "results" / "tables" / "comparison.csv").set_index("run")
    for run in RUNS:
        s = summary(tiny_workflow, run)
        cost = s["recorder_cost"]
        assert cost["callbacks_s"] > 0 and cost["sampler_cpu_s"] >= 0
        assert 0 < cost["share"] < 0.03, (run, cost)  # the recorder's goal: at most 3% of training
        assert 1.0 < s["startup_s"] < 120, (run, s["startup_s"])
        assert table.loc[run, "recorder (% of training)"] == pytest.approx(100 * cost["share"])
        assert table.loc[run, "start-up (s)"] == pytest.approx(s["startup_s"])
        assert 0 < s["setup_s"] < s["wall_s"] - s["train_s"], (run, s["setup_s"])
        assert table.loc[run, "set-up (s)"] == pytest.approx(s["setup_s"])
    # DeepSpeed's engine (partitioning, its optimizer) takes longer to set up than a plain Trainer's
    assert summary(tiny_workflow, "zero3")["setup_s"] > summary(tiny_workflow, "full")["setup_s"]


def test_every_run_loaded_only_the_libraries_its_method_uses(tiny_workflow):
    """No peft or bitsandbytes in a full fine-tuning job, no DeepSpeed outside ZeRO runs
    (offloadbench.env.hide_libraries), and each run that needs one did load it."""
    from offloadbench.env import OPTIONAL_LIBRARIES, libraries_needed

    seen = set()
    for run in RUNS:
        s = summary(tiny_workflow, run)
        assert s["libraries"] == [m for m in OPTIONAL_LIBRARIES if m in libraries_needed(s["spec"])], run
        seen.update(s["libraries"])
    assert seen == set(OPTIONAL_LIBRARIES), "the tiny profile has runs that use each of them"
    assert summary(tiny_workflow, "full")["libraries"] == []


def job_times(workdir, rule: str) -> list[tuple[float, float]]:
    """(start, end) of each job of ``rule``, from Snakemake's own record of the outputs it made."""
    records = [json.loads(p.read_text()) for p in (workdir / ".snakemake" / "metadata").iterdir()]
    jobs: dict[int, tuple[float, float]] = {}  # one record per output file: the job's are alike
    for r in records:
        if r.get("rule") == rule:
            start, end = jobs.get(r["job_hash"], (r["starttime"], r["endtime"]))
            jobs[r["job_hash"]] = (min(start, r["starttime"]), max(end, r["endtime"]))
    return sorted(jobs.values())


def test_each_run_trained_with_its_cpu_threads_and_small_runs_side_by_side(tiny_workflow):
    """training.cpu_threads 1 on the CPU: each job is given one core and its torch uses one
    (OMP_NUM_THREADS), so that two jobs train at once on the 2 cores; pretraining keeps both."""
    from offloadbench.launch import job_threads

    for run in RUNS:
        s = summary(tiny_workflow, run)
        assert s["threads"] == job_threads(s["spec"], "none", 2, False) == 1, run
    pretrain = json.loads((tiny_workflow / "results" / "pretrain" / "tiny-test-llama" / "summary.json").read_text())
    assert pretrain["threads"] == 2
    train = job_times(tiny_workflow, "train")
    assert len(train) == len(RUNS)
    overlaps = sum(b[0] < a[1] for a, b in zip(train, train[1:], strict=False))
    assert overlaps >= len(RUNS) // 3, f"training jobs ran one after the other: {train}"


def test_finished_workflow_has_nothing_left_to_do(tiny_workflow):
    proc = snakemake(tiny_workflow, "-n", "--cores", "1", "--configfile", *tiny_configfiles(tiny_workflow))
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_tables_have_a_row_per_run(tiny_workflow):
    import pandas as pd

    table = pd.read_csv(tiny_workflow / "results" / "tables" / "comparison.csv")
    assert list(table["run"]) == RUNS and set(table["status"]) == {"ok"}
    for row in table.astype(object).where(table.notna(), None).to_dict("records"):
        validate(row, "comparison_row.schema.json")
    twins = table.set_index("run")["twin verdict"].dropna()
    assert len(twins) == 5 and set(twins) == {"agrees"}, twins
    relative = pd.read_csv(tiny_workflow / "results" / "tables" / "relative.csv").set_index("run")
    assert relative.loc[CONFIG["baseline_run"], "slowdown (x)"] == pytest.approx(1.0)
    base = json.loads((tiny_workflow / "results" / "eval" / "base.json").read_text())
    assert all(summary(tiny_workflow, run)["eval_loss"] < base["eval_loss"] for run in RUNS), "fine-tuning did not help"


def test_claims_are_checked_and_gpu_claims_are_not_applicable_on_cpu(tiny_workflow):
    claims = json.loads((tiny_workflow / "results" / "claims.json").read_text())
    validate(claims, "claims.schema.json")
    verdicts = {c["id"]: c for c in claims["claims"]}
    assert verdicts["C1"]["verdict"] == "N/A" and "CPU" in verdicts["C1"]["reason"]
    assert verdicts["C3"]["verdict"] == "N/A"
    # No host-device copy on a CPU: the speed cost of offload is not measurable here.
    assert verdicts["C2"]["verdict"] == "N/A" and "no host-device copy" in verdicts["C2"]["reason"]
    # C5 needs each run 5% below the base model's perplexity; in the tiny profile's 8 steps full
    # fine-tuning gets there and the adapters (about 4%) do not: the verdict follows the drops.
    base = json.loads((tiny_workflow / "results" / "eval" / "base.json").read_text())["eval_ppl"]
    short = sorted(r for r in RUNS if summary(tiny_workflow, r)["eval_ppl"] > 0.95 * base)
    assert short and "full" not in short
    assert verdicts["C5"]["verdict"] == "FAIL" and all(f"{r} (" in verdicts["C5"]["reason"] for r in short)
    assert verdicts["C5"]["numbers"]["full"]["drop"] > 0.05
    assert verdicts["C5"]["predicted"]["verdict"] is None, "what training produces is not predicted"
    assert verdicts["C3"]["predicted"]["verdict"] == "PASS", "the paper profile's prediction is beside it"
    # Offload keeps the math: every offload run follows its twin without offload, step by step.
    assert verdicts["C6"]["verdict"] == "PASS", verdicts["C6"]["reason"]
    assert "5 offload runs agree" in verdicts["C6"]["reason"]
    assert (tiny_workflow / "results" / "claims.md").read_text().startswith("# Claims (tiny profile)")


def test_report_holds_every_result_and_no_output_contains_the_token(tiny_workflow):
    """snakemake --report works on the finished workflow and embeds the claims, tables, figures,
    memory model, reference comparison and provenance; no file written, report included, holds the
    HF token the workflow ran with."""
    report = tiny_workflow / "results" / "report.html"
    proc = snakemake(
        tiny_workflow,
        "--cores",
        "1",
        "--configfile",
        *tiny_configfiles(tiny_workflow),
        "--report",
        str(report),
        env={"HF_TOKEN": FAKE_TOKEN},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    for item in ("claims.html", "comparison.html", "memory.html", "reference.html", "provenance.html", "memory.png"):
        assert item in text, item
    leaks = [p for p in tiny_workflow.rglob("*") if p.is_file() and FAKE_TOKEN.encode() in p.read_bytes()]
    assert not leaks


def test_a_run_that_fails_is_recorded_and_the_job_succeeds(tiny_workflow, tmp_path):
    """An error while training gives status failed in summary.json, and exit 0 so the workflow goes on."""
    import subprocess

    broken = tmp_path / "broken.json"
    broken.write_text(
        json.dumps(
            {
                "train_batch_size": "auto",
                "train_micro_batch_size_per_gpu": "auto",
                "zero_optimization": {"stage": 3, "no_such_deepspeed_key": 1},
            }
        )
    )
    spec = tiny_spec(tiny_workflow, "zero3")
    spec.update(run="broken", deepspeed=str(broken))
    out = tmp_path / "run"
    proc = subprocess.run(train_command(tiny_workflow, spec, out), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads((out / "summary.json").read_text())
    validate(failed, "summary.schema.json")
    assert failed["status"] == "failed" and "no_such_deepspeed_key" in failed["error"]
    assert failed["eval_loss"] is None and failed["offload"] == "none"
    assert (out / "metrics.jsonl").exists()


def test_out_of_memory_errors_are_told_apart():
    """An accelerator OOM (what C1 and C3 read as "needs more than the card has") and a host that ran
    out are different statuses; anything else is a failure."""
    from offloadbench.training.lifecycle import out_of_memory

    assert out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "oom"
    assert out_of_memory(RuntimeError("CUDA error: out of memory")) == "oom"
    host = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GiB")
    assert out_of_memory(host) == "host_oom"
    assert out_of_memory(MemoryError()) == "host_oom"
    assert out_of_memory(RuntimeError("pin_memory: out of memory")) == "host_oom"
    assert out_of_memory(ValueError("shape mismatch")) is None


def wait_for(path: Path, proc, timeout_s: float = 300) -> None:
    """Until ``path`` exists, while ``proc`` is still running (it must not finish first)."""
    import time

    deadline = time.time() + timeout_s
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.05)


def kill_tree(proc) -> None:
    """SIGKILL a process and everything below it at once, as a lost node or a cgroup kill would:
    torchrun's workers live in a session of their own and outlive a kill of torchrun alone."""
    import signal

    import psutil

    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    psutil.wait_procs([p for p in map(_process, tree) if p], timeout=30)


def _process(pid):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


@pytest.mark.parametrize("run", ["qlora", "zero3_offload_cpu"])
def test_a_killed_run_resumes_from_its_checkpoint_and_matches(tiny_workflow, tmp_path, run):
    """SIGKILL a real training process after a checkpoint, start it again: it resumes there, and
    the finished run matches an uninterrupted one."""
    import subprocess

    spec = tiny_spec(tiny_workflow, run, max_steps=24, save_steps=4)

    def start(out):
        return subprocess.Popen(
            train_command(tiny_workflow, spec, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    straight = start(tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-3000:]

    out = tmp_path / "killed"
    proc = start(out)
    wait_for(out / "checkpoints" / "checkpoint-8" / "trainer_state.json", proc)
    kill_tree(proc)
    assert not (out / "summary.json").exists()

    again = start(out)
    assert again.wait(timeout=600) == 0, again.stderr.read()[-3000:]
    resumed, reference = (json.loads((d / "summary.json").read_text()) for d in (out, tmp_path / "straight"))
    assert resumed["resumed_from"] and resumed["resumed_from"].endswith(
        ("checkpoint-8", "checkpoint-12", "checkpoint-16", "checkpoint-20")
    )
    assert resumed["steps"] == 24
    assert resumed["train_loss_final"] == pytest.approx(reference["train_loss_final"], abs=1e-4)
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-4)
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 25)), "metrics lost or repeated across the kill"
    assert [r["loss"] for r in rows] == pytest.approx(
        [r["loss"] for r in read_jsonl(tmp_path / "straight" / "metrics.jsonl")], abs=1e-4
    )


@pytest.mark.parametrize("trainer_save", [False, True], ids=["offloadbench", "trainer-own"])
def test_a_zero3_adapter_save_gathers_only_the_adapter(tiny_workflow, tmp_path, trainer_save):
    """A resume point of QLoRA under ZeRO-3 gathers the adapter's parameters only and leaves the
    process's threads as they were. Trainer's own save gathers the frozen base too, and on a CPU
    the large gathers leave a second OpenMP thread team behind that slowed every later step
    (docs/benchmarks.md); the "trainer-own" case shows that this record catches exactly that."""
    import subprocess
    import sys

    spec = tiny_spec(tiny_workflow, "qlora_offload", max_steps=4, save_steps=2)
    record = tmp_path / "record.json"
    cmd = train_command(tiny_workflow, spec, tmp_path / "out")
    assert cmd[1:3] == ["-m", "offloadbench.train"], cmd
    env = {**os.environ, "OMP_NUM_THREADS": "2", "OFFLOADBENCH_TEST_TRAINER_SAVE": "1" if trainer_save else "0"}
    worker = Path(__file__).with_name("zero3_save_worker.py")
    proc = subprocess.run(
        [sys.executable, str(worker), str(record), *cmd[3:]], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0 and (tmp_path / "out" / "summary.json").exists(), proc.stderr[-3000:]
    rec = json.loads(record.read_text())
    assert [s["step"] for s in rec["saves"]] == [2, 4], rec
    assert rec["gathers"], rec
    frozen = sum(g["frozen"] for g in rec["gathers"])
    new_threads = [s["threads_after"] - s["threads_before"] for s in rec["saves"]]
    if trainer_save:
        assert frozen > 0 and new_threads[0] > 0, rec
    else:
        assert frozen == 0 and all(g["trainable"] for g in rec["gathers"]) and new_threads == [0, 0], rec


def test_nvme_swap_folder_survives_a_failure_and_a_kill_and_goes_after_success(tiny_workflow, tmp_path):
    """The user's nvme_dir (with a file of theirs) through a failing run, a SIGKILL mid-run and the
    resumed run's success: the canary always survives; the run's own swap folder stays while the
    run is unfinished (resume needs it) and is removed once it succeeds."""
    import subprocess

    from offloadbench import owned

    disk = tmp_path / "fast-disk"
    disk.mkdir()
    (disk / "canary.txt").write_text("mine")
    broken = tmp_path / "broken.json"
    spec = tiny_spec(tiny_workflow, "zero3_offload_nvme", max_steps=12, save_steps=4)
    spec["nvme_dir"] = str(disk)
    ds = json.loads(Path(spec["deepspeed"]).read_text())
    ds["zero_optimization"]["no_such_deepspeed_key"] = 1
    broken.write_text(json.dumps(ds))
    failing = {**spec, "deepspeed": str(broken)}
    proc = subprocess.run(train_command(tiny_workflow, failing, tmp_path / "failed"), capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads((tmp_path / "failed" / "summary.json").read_text())["status"] == "failed"
    assert (disk / "canary.txt").read_text() == "mine"

    out = tmp_path / "run"
    swap = owned.swap_dir(disk, spec["run"], out)
    proc = subprocess.Popen(train_command(tiny_workflow, spec, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(out / "checkpoints" / "checkpoint-4" / "trainer_state.json", proc)
    kill_tree(proc)
    assert (disk / "canary.txt").read_text() == "mine"
    assert owned.read_marker(swap)["run_folder"] == str(out.resolve()), "the killed run's swap folder is its own"
    assert json.loads((out / owned.SWAP_POINTER).read_text())["path"] == str(swap)

    again = subprocess.run(train_command(tiny_workflow, spec, out), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    done = json.loads((out / "summary.json").read_text())
    assert done["status"] == "ok" and done["resumed_from"] and done["nvme_bytes_written"] > 0
    assert not swap.exists() and not (out / owned.SWAP_POINTER).exists()
    # What is left: the user's file, and the failed run's own swap folder (a failed run keeps it,
    # like its run folder, until the user deletes both to try again).
    failed_swap = owned.swap_dir(disk, spec["run"], tmp_path / "failed")
    assert sorted(p.name for p in disk.iterdir()) == sorted(["canary.txt", failed_swap.name])
    assert owned.read_marker(failed_swap)["run_folder"] == str((tmp_path / "failed").resolve())


def test_the_reference_comparison_finds_a_lora_run_that_did_not_train(tiny_workflow, tmp_path):
    """LoRA trained with learning rate 0 computes the base model exactly: its eval loss is within
    the loss tolerance of a trained run's (LoRA's whole gain is smaller than it), but its gain over
    the base model is 0, and the comparison says outside."""
    import subprocess

    import pandas as pd

    from offloadbench.aggregate import comparison
    from offloadbench.reference import compare

    runs = tmp_path / "runs"
    proc = subprocess.run(
        train_command(tiny_workflow, tiny_spec(tiny_workflow, "lora", learning_rate=0.0), runs / "lora"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = json.loads((tiny_workflow / "results" / "eval" / "base.json").read_text())["eval_loss"]
    untrained = comparison(["lora"], runs, base)
    assert untrained.loc[0, "eval gain"] == pytest.approx(0.0, abs=1e-6)
    reference = pd.read_csv(tiny_workflow / "results" / "tables" / "comparison.csv")
    assert reference.set_index("run").loc["lora", "eval gain"] > 0
    rows = {
        r["metric"]: r for r in compare(untrained, reference, CONFIG["reference"]["tolerances"]) if r["run"] == "lora"
    }
    assert rows["eval gain"]["verdict"] == "outside"
    trained = comparison(["lora"], tiny_workflow / "results" / "runs", base)
    assert {r["metric"]: r["verdict"] for r in compare(trained, reference, CONFIG["reference"]["tolerances"])}[
        "eval gain"
    ] == "within"


@pytest.mark.parametrize("kill", ["snakemake alone", "its process group"])
def test_killing_snakemake_leaves_no_worker_and_the_next_run_resumes(tiny_workflow, tmp_path, kill):
    """SIGKILL of Snakemake (alone, or with its process group) while a ZeRO-3 run trains: the
    torchrun worker, which lives in a session of its own, stops within seconds and writes no
    summary; `snakemake --rerun-incomplete` then resumes the run from its checkpoint."""
    import shutil
    import signal
    import subprocess

    import psutil

    work = tmp_path / "work"
    shutil.copytree(tiny_workflow / "results", work / "results", ignore=shutil.ignore_patterns("runs", "logs"))
    target = "results/runs/zero3/summary.json"
    args = ["--cores", "2", "--configfile", *tiny_configfiles(tiny_workflow)]
    cmd = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(work)]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen([*cmd, target, *args], start_new_session=True, **quiet)
    ckpt = work / "results" / "runs" / "zero3" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    wait_for(ckpt, proc)
    tree = psutil.Process(proc.pid).children(recursive=True)
    workers = [p for p in tree if "offloadbench.train" in " ".join(p.cmdline())]
    assert workers, "no training process found"
    if kill == "snakemake alone":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive, f"training processes outlived Snakemake: {[p.cmdline()[:4] for p in alive]}"
    assert not (work / "results" / "runs" / "zero3" / "summary.json").exists()
    # What Snakemake itself says after a kill: unlock (no --cores needed), then run again.
    unlock = subprocess.run([*cmd, "--unlock", "--configfile", *tiny_configfiles(tiny_workflow)], capture_output=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    again = subprocess.run([*cmd, target, *args, "--rerun-incomplete"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((work / "results" / "runs" / "zero3" / "summary.json").read_text())
    # The last complete checkpoint: 4, or 8 where the worker got that far inside the watchdog's second.
    assert resumed["status"] == "ok" and resumed["resumed_from"].endswith(("checkpoint-4", "checkpoint-8"))
    assert resumed["eval_loss"] == pytest.approx(summary(tiny_workflow, "zero3")["eval_loss"], abs=1e-4)
