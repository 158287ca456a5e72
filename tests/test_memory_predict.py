"""Where the memory model puts each component of a run (GPU or host memory) by device, method and
ranks per node, and compare's ratios of a measured summary.json to the prediction."""

from __future__ import annotations

import pytest
from conftest import ATTN, LORA_TWO, MLP, N_TWO, TWO, spec_for, validate

from offloadbench.memory.counting import (
    activation_bytes,
    autocast_weight_copies,
    nf4_bytes_per_param,
)
from offloadbench.memory.predict import COMPONENTS, compare, precision, predict


@pytest.fixture(scope="module")
def config():
    """The default profile with the paper's adapters (q and v at r 8), which LORA_TWO counts."""
    from offloadbench.config import load_config

    return load_config(overrides={"lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]}})


def test_cpu_run_puts_everything_in_host_memory(config):
    spec = spec_for(config, "full")
    pred = predict(spec, TWO, 32, "cpu")
    host, gpu = pred["predicted"]["host"], pred["predicted"]["gpu"]
    assert gpu["total"] == 0 and pred["predicted"]["nvme"]["total"] == 0
    assert host["weights"] == 4 * N_TWO  # fp32
    assert host["gradients"] == 4 * N_TWO
    assert host["optimizer"] == 8 * N_TWO  # AdamW's two fp32 moments; CPU AdamW has no foreach temporary
    acts = activation_bytes(TWO, spec, precision(spec, "cpu", zero3=False), 32)
    assert host["activations"] == acts["peak"]
    assert host["total"] == sum(host[c] for c in COMPONENTS)
    assert pred["params"] == {"total": N_TWO, "trainable": N_TWO}


def test_qlora_stores_projections_in_nf4(config):
    # NF4: half a byte per value, plus per block of 64 an 8-bit absmax and per 256 blocks an fp32 one.
    assert nf4_bytes_per_param(True) == 0.5 + 1 / 64 + 4 / (64 * 256)
    assert nf4_bytes_per_param(False) == 0.5 + 4 / 64
    pred = predict(spec_for(config, "qlora"), TWO, 32, "cpu")
    linear = 2 * (ATTN + MLP)  # 73 728 values in 4 bits: 36 864 + 1 152 + 18 bytes
    weights = 36_864 + 1_152 + 18 + 4 * (N_TWO - linear) + 4 * LORA_TWO
    assert pred["predicted"]["host"]["weights"] == weights == 315_794
    assert pred["predicted"]["host"]["optimizer"] == 8 * LORA_TWO
    assert pred["params"] == {"total": N_TWO + LORA_TWO, "trainable": LORA_TWO}


def test_cuda_lora_places_the_model_on_the_gpu_after_loading_it_on_the_host(config):
    pred = predict(spec_for(config, "lora"), TWO, 32, "cuda")
    gpu, host = pred["predicted"]["gpu"], pred["predicted"]["host"]
    assert pred["dtype"] == "bf16"
    # train.py loads the projections in bf16 and, as qlora's after prepare_model_for_kbit_training,
    # the embedding, norms and lm_head in fp32; adapters fp32
    linear = 2 * (ATTN + MLP)
    assert gpu["weights"] == 2 * linear + 4 * (N_TWO - linear) + 4 * LORA_TWO
    qlora = predict(spec_for(config, "qlora"), TWO, 32, "cuda")["predicted"]["gpu"]
    assert gpu["weights"] - qlora["weights"] == 2 * linear - (36_864 + 1_152 + 18)  # only the projections differ
    assert gpu["gradients"] == 4 * LORA_TWO
    assert gpu["optimizer"] == 8 * LORA_TWO + 4 * LORA_TWO  # moments + foreach AdamW's temporary
    fused = predict(spec_for(config, "lora", optimizer="adamw_torch_fused"), TWO, 32, "cuda")["predicted"]["gpu"]
    assert fused["optimizer"] == 8 * LORA_TWO  # the fused kernel updates in place: moments only
    assert host["weights"] == 2 * linear + 4 * (N_TWO - linear)  # built on the CPU before Trainer moves it
    assert any("projections loaded in bf16" in a for a in pred["assumptions"])
    # On the CPU (dtype auto: fp32) the base stays fp32.
    cpu = predict(spec_for(config, "lora"), TWO, 32, "cpu")["predicted"]["host"]
    assert cpu["weights"] == 4 * N_TWO + 4 * LORA_TWO
    # Autocast copies the fp32 adapter weights (r x in and out x r per adapter) and the fp32
    # lm_head, not the bf16 projections.
    p = precision(spec_for(config, "lora"), "cuda", zero3=False)
    assert autocast_weight_copies(TWO, spec_for(config, "lora"), p) == (
        2 * (LORA_TWO // 2),  # one layer's adapters, 2 bytes per value
        2 * 512 * 64,  # lm_head
        2 * 2 * 8 * 64,  # layer 0: lora_A of q_proj and v_proj (input needs no gradient there)
    )
    offload = predict(spec_for(config, "lora", activation_offload=True), TWO, 32, "cuda")["predicted"]
    assert offload["host"]["activations"] == pred["activations"]["saved"]
    assert offload["gpu"]["activations"] < gpu["activations"]


def test_compare_gives_ratios_and_null_where_a_side_is_missing(config):
    pred = predict(spec_for(config, "full"), TWO, 32, "cpu")
    summary = {"device": "cpu", "host_rss_peak_bytes": 600 * 2**20, "gpu_allocated_peak_bytes": None}
    out = compare(pred, summary)
    assert out["measured"] == {"gpu": None, "host": 600 * 2**20, "nvme": None}
    assert out["ratio"]["gpu"] is None and out["ratio"]["nvme"] is None
    assert out["ratio"]["host"] == round(600 * 2**20 / pred["predicted"]["host"]["total"], 4)
    assert any("left out" in a for a in out["assumptions"])
    with_baseline = compare(pred, {**summary, "host_rss_baseline_bytes": 500 * 2**20})
    host = with_baseline["predicted"]["host"]
    assert host["runtime"] == 500 * 2**20 and host["total"] == pred["predicted"]["host"]["total"] + 500 * 2**20
    assert pred["predicted"]["host"]["runtime"] == 0  # compare does not change its input
    # Above the baseline: what the model predicts against what the run added to its runtime. Without a
    # baseline there is no measured figure to set beside it.
    own = pred["predicted"]["host"]["total"]
    assert out["above_baseline"]["measured"] == {"host": None} and out["above_baseline"]["ratio"] == {"host": None}
    above = with_baseline["above_baseline"]
    assert above["predicted"]["host"] == own and above["measured"]["host"] == 100 * 2**20
    assert above["ratio"]["host"] == round(100 * 2**20 / own, 4)


def test_a_total_dominated_by_the_runtime_does_not_hide_a_wrong_prediction(config):
    # A run that added twice what the model predicts: the host ratio with the runtime inside looks
    # close, the one above the baseline says 2x.
    pred = predict(spec_for(config, "full"), TWO, 32, "cpu")
    own = pred["predicted"]["host"]["total"]
    runtime = 20 * own
    out = compare(pred, {"device": "cpu", "host_rss_baseline_bytes": runtime, "host_rss_peak_bytes": runtime + 2 * own})
    assert out["ratio"]["host"] < 1.05
    assert out["above_baseline"]["ratio"]["host"] == 2.0


def test_host_is_per_node_and_compare_sums_the_ranks_of_a_node(config):
    one = predict(spec_for(config, "full"), TWO, 32, "cpu")["predicted"]["host"]
    spec = spec_for(config, "full")
    spec["world_size"] = 2
    pred = predict(spec, TWO, 32, "cpu")
    host = pred["predicted"]["host"]
    assert host["weights"] == 2 * one["weights"]  # two processes on one node, each with the model
    assert host["gradients"] == 2 * (4 * N_TWO + 4 * N_TWO)  # DDP keeps a bucket copy of the gradients
    ranks = [{"rank": r, "host": "node0", "host_rss_peak_bytes": 700, "host_rss_baseline_bytes": 500} for r in (0, 1)]
    summary = {"device": "cpu", "host_rss_peak_bytes": 700, "host_rss_baseline_bytes": 500, "ranks": ranks}
    out = compare(pred, summary)
    assert out["measured"]["host"] == 1400 and out["predicted"]["host"]["runtime"] == 1000
    assert out["above_baseline"]["measured"]["host"] == 400  # both ranks' peaks less both baselines


def test_qlora_without_prepare_kbit_keeps_the_non_quantized_weights_in_the_compute_dtype(config):
    # prepare_model_for_kbit_training (train.py) upcasts embedding, norms and lm_head to fp32;
    # stacks that skip it (quantization.prepare_kbit false) keep them, and the residual stream, in bf16.
    spec = spec_for(config, "qlora")
    spec["quantization"] = {**spec["quantization"], "prepare_kbit": False}
    p = precision(spec, "cuda", zero3=False)
    assert p["base"] == p["resid"] == 2 and p["adapter"] == 4
    weights = predict(spec, TWO, 32, "cuda")["predicted"]["gpu"]["weights"]
    linear = 2 * (ATTN + MLP)
    assert weights == 36_864 + 1_152 + 18 + 2 * (N_TWO - linear) + 4 * LORA_TWO
    default = predict(spec_for(config, "qlora"), TWO, 32, "cuda")["predicted"]["gpu"]
    assert default["weights"] - weights == 2 * (N_TWO - linear)
    assert precision(spec_for(config, "qlora"), "cuda", zero3=False)["base"] == 4


def test_a_measurement_through_nvml_includes_the_cuda_context():
    from offloadbench.memory.measured import CUDA_CONTEXT_BYTES, comparable_gpu_bytes

    assert comparable_gpu_bytes(10, "allocated") == comparable_gpu_bytes(10, "reserved") == 10
    assert comparable_gpu_bytes(10, "nvml") == comparable_gpu_bytes(10, "unspecified") == 10 + CUDA_CONTEXT_BYTES
    import pytest

    with pytest.raises(ValueError):
        comparable_gpu_bytes(10, "guessed")


def _paper_run(name: str, world_size: int, model: str = "llama-3.1-8b") -> tuple[dict, dict]:
    import json

    from conftest import REPO

    from offloadbench.config import load_config
    from offloadbench.spec import run_spec

    spec = run_spec(load_config(REPO / "configs" / "paper.yaml"), name)
    spec = {**spec, "world_size": world_size}
    return spec, json.loads((REPO / "configs" / "models" / f"{model}.json").read_text())


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.3-70b", "llama-2-70b"])
def test_zero3_qlora_loads_the_whole_4bit_model_on_one_gpu(model):
    """transformers skips zero.Init for a quantized model: before DeepSpeed partitions it, one GPU
    holds the whole NF4 model with its fp32 parts. On 8 ranks that is far above the training
    peak's per-rank weights, and above what a ZeRO-3 full/lora run (zero.Init) loads."""
    from offloadbench.memory.counting import base_bytes

    for name in ("qlora_zero3", "qlora_offload"):
        spec, cfg = _paper_run(name, 8, model)
        pred = predict(spec, cfg, spec["block_size"], "cuda")
        load, weights = pred["predicted_load"]["gpu"], pred["predicted"]["gpu"]["weights"]
        p = precision(spec, "cuda", zero3=True)
        assert load >= base_bytes(cfg, spec, p)  # the whole quantized model
        assert load > 2 * weights, (name, load, weights)  # weights: 1/8 partition + two gathered tensors
    # ZeRO-3 full fine-tuning with offload loads partitioned: about one tensor on the GPU
    spec, cfg = _paper_run("zero3_offload_cpu", 8, model)
    pred = predict(spec, cfg, spec["block_size"], "cuda")
    from offloadbench.memory.counting import largest_tensor

    assert pred["predicted_load"]["gpu"] == 2 * largest_tensor(cfg)
    assert predict(spec, cfg, spec["block_size"], "cpu")["predicted_load"]["gpu"] == 0


def test_load_peak_without_zero3_is_the_weights_as_loaded(config):
    pred = predict(spec_for(config, "lora"), TWO, 32, "cuda")
    assert pred["predicted_load"]["gpu"] == pred["predicted"]["gpu"]["weights"]  # moved to the GPU whole
    q = predict(spec_for(config, "qlora"), TWO, 32, "cuda")
    # + the bf16 copy of the largest non-quantized tensor while prepare_model_for_kbit_training upcasts it
    assert q["predicted_load"]["gpu"] == q["predicted"]["gpu"]["weights"] + 2 * 512 * 64
    out = compare(q, {"device": "cuda", "gpu_load_allocated_peak_bytes": q["predicted_load"]["gpu"] * 2})
    assert out["measured_load"] == {"gpu": q["predicted_load"]["gpu"] * 2} and out["ratio_load"] == {"gpu": 2.0}
    assert compare(q, {"device": "cuda"})["ratio_load"] == {"gpu": None}
    validate({**out, "deepspeed_estimate": None}, "memory.schema.json")
