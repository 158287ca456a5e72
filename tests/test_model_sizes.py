"""Model sizes: the memory-scale model of the default profile, fine-tuned as initialised, and the
claims that compare runs with the base model leave other sizes out (with a note)."""

from __future__ import annotations

from conftest import TINY, write_run

from offloadbench.claims import check_claims
from offloadbench.config import load_config
from offloadbench.memory.counting import param_counts
from offloadbench.spec import model_ref, models, pretrain_spec, pretrain_steps, run_spec, scratch_config


def test_the_memory_scale_model_outweighs_the_runtime_three_times():
    """~0.5 GiB of runtime (host_rss_baseline_bytes on the reference machine); full fine-tuning with
    Adam keeps 16 bytes a parameter."""
    config = load_config()
    params = param_counts({"model_type": "llama", **scratch_config(config, "mem")})["total"]
    assert 16 * params >= 3 * 0.5 * 2**30, params
    assert "pretrain_steps" not in scratch_config(config, "mem"), "not a LlamaConfig field"


def test_a_size_with_no_pretraining_is_fine_tuned_from_its_initialised_model():
    config = load_config()
    assert pretrain_steps(config, "mem") == 0 and pretrain_steps(config) == config["model"]["pretrain"]["steps"]
    assert model_ref(config, "mem")["path"] == "results/models/tiny-llama-mem-init"
    assert model_ref(config)["path"] == "results/models/tiny-llama"
    assert set(models(config)) == {"tiny-llama", "tiny-llama-mem"}
    unused = load_config(overrides={"runs": [{"name": "full", "method": "full"}]})
    assert set(models(unused)) == {"tiny-llama"}, "a size no run uses is not built"
    sized = load_config(overrides={"model": {"sizes": {"mem": {"pretrain_steps": 3}}}})
    assert model_ref(sized, "mem")["path"] == "results/models/tiny-llama-mem"
    assert pretrain_spec(sized, "tiny-llama-mem")["training"]["max_steps"] == 3


def test_below_base_leaves_runs_of_other_sizes_out_and_says_so(tmp_path):
    claim = {"id": "C5", "statement": "s", "check": "below_base", "runs": "all", "metric": "eval_ppl"}
    spec = run_spec(load_config(TINY), "full")
    write_run(tmp_path, "full", spec=spec, eval_ppl=10.0)
    write_run(tmp_path, "zero3", spec={**spec, "model_size": "mem"}, eval_ppl=4000.0)  # a random 103M model
    got = check_claims([claim], tmp_path, {"eval_ppl": 20.0}, ["full", "zero3"])[0]
    assert got["verdict"] == "PASS" and "zero3: another model size" in got["reason"]
    listed = {**claim, "runs": ["full", "zero3"]}  # named explicitly: judged
    assert check_claims([listed], tmp_path, {"eval_ppl": 20.0}, ["full", "zero3"])[0]["verdict"] == "FAIL"


def test_a_size_trains_its_runs_with_its_own_overrides_before_the_runs_own():
    """Memory-scale runs measure in a few steps of one block; a run's own training keys still win."""
    config = load_config()
    mem, base = run_spec(config, "zero3_offload_nvme"), run_spec(config, "full")
    assert mem["model_size"] == "mem" and mem["model"]["path"] == "results/models/tiny-llama-mem-init"
    assert mem["training"]["max_steps"] == 7 and mem["training"]["micro_batch_size"] == 1
    assert base["training"]["max_steps"] == config["training"]["max_steps"] == 40
    assert mem["training"]["learning_rate"] == base["training"]["learning_rate"], "the rest are the defaults"
    runs = [{"name": "z", "method": "full", "model_size": "mem", "training": {"max_steps": 3, "save_steps": 3}}]
    own = load_config(overrides={"runs": runs, "baseline_run": "z"})
    assert run_spec(own, "z")["training"]["max_steps"] == 3
    assert run_spec(own, "z")["training"]["micro_batch_size"] == 1


def test_a_null_size_trains_the_base_model_exactly_as_a_base_run():
    """The tiny profile sets mem to null: its memory-scale runs are the base model's runs, with the
    same spec but the name, so the tests' expectations of the ZeRO-3 runs hold."""
    tiny = load_config(TINY)
    assert run_spec(tiny, "zero3")["model_size"] == "base"
    assert set(models(tiny)) == {"tiny-test-llama"}
    lora, lora_mem = run_spec(tiny, "lora"), run_spec(tiny, "lora_mem")
    assert {**lora_mem, "run": "lora", "lora": lora["lora"]} == lora, "only the run's own adapters differ"
    assert lora_mem["model"] == lora["model"] and lora_mem["training"] == lora["training"]
