"""The memory model against hand-worked examples, torch's own count of saved tensors, and the
DeepSpeed run this repository measured. No training: models are built on the meta device or run
one forward pass of a two-layer model on the CPU."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import REPO, SCRATCH, validate

from offloadbench.config import load_config, run_spec
from offloadbench.memory.cli import main
from offloadbench.memory.counting import (
    activation_bytes,
    arch,
    autocast_weight_copies,
    largest_tensor,
    layer_bytes_per_token,
    lora_params,
    meta_model,
    nf4_bytes_per_param,
    param_counts,
)
from offloadbench.memory.estimate import estimate_time
from offloadbench.memory.predict import COMPONENTS, compare, precision, predict, predicted_disk_bytes
from offloadbench.memory.zero import deepspeed_estimate

# A two-layer Llama (the shapes of tests/conftest.py's SCRATCH): head_dim 64 / 4 = 16, k and v
# 2 heads x 16 = 32 wide (grouped-query attention), untied lm_head.
TWO = {**SCRATCH, "tie_word_embeddings": False}
EMBED = 512 * 64  # 32 768, and lm_head the same
ATTN = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64  # q, k, v, o: 12 288
MLP = 3 * 64 * 128  # gate, up, down: 24 576
LAYER = ATTN + MLP + 2 * 64  # + two RMSNorms: 36 992
N_TWO = EMBED + 2 * LAYER + 64 + EMBED  # + final norm + lm_head: 139 584
LORA_TWO = 2 * (8 * (64 + 64) + 8 * (64 + 32))  # r=8 on q_proj and v_proj, two layers: 3 584


@pytest.fixture(scope="module")
def config():
    return load_config()


@pytest.fixture(scope="module")
def tiny(config):
    """The default profile's model config (the tiny Llama every default run trains)."""
    return {**config["model"]["scratch"], "tie_word_embeddings": False}


def spec_for(config, run: str, **training) -> dict:
    spec = copy.deepcopy(run_spec(config, run))
    spec["training"].update(training)
    return spec


def test_parameter_counts_by_hand_match_llama_on_the_meta_device():
    assert N_TWO == 139_584 and LORA_TWO == 3_584
    counts = param_counts(TWO)
    assert counts["total"] == N_TWO
    assert counts["linear"] == 2 * (ATTN + MLP) and counts["norms"] == 5 * 64
    assert sum(counts["tensors"]) == N_TWO
    assert sum(p.numel() for p in meta_model(TWO).parameters()) == N_TWO
    assert lora_params(TWO, {"r": 8, "target_modules": ["q_proj", "v_proj"]}) == LORA_TWO


def test_llama_3_1_8b_has_8_03_billion_parameters():
    cfg = json.loads((REPO / "configs" / "models" / "llama-3.1-8b.json").read_text())
    embed = 128256 * 4096  # 525 336 576
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # 218 112 000
    total = embed + 32 * layer + 4096 + embed
    assert total == 8_030_261_248
    assert param_counts(cfg)["total"] == total
    assert sum(p.numel() for p in meta_model(cfg).parameters()) == total
    assert lora_params(cfg, {"r": 8, "target_modules": ["q_proj", "v_proj"]}) == 32 * 8 * (8192 + 5120)


def test_full_fine_tuning_activations_by_hand(config):
    spec = spec_for(config, "full", micro_batch_size=2)
    p = precision(spec, "cpu", zero3=False)
    # Per token of one layer (fp32): two RMSNorms keep their input and 1/rms (2 x (4*64 + 4)) and
    # the normalized input (2 x 4*64); attention q, k, v, output 4*(64+32+32+64) and logsumexp 4*4;
    # MLP gate, silu, up, product 4*4*128; inputs of q/k/v and gate/up for weight grads 2 x 4*64.
    layer = 2 * (4 * 64 + 4) + 2 * 4 * 64 + 4 * (64 + 32 + 32 + 64) + 4 * 4 + 4 * 4 * 128 + 2 * 4 * 64
    assert layer == 4376
    assert layer_bytes_per_token(arch(TWO), spec, p)[0] == layer
    # After the layers: final norm (4*64 + 4 + 4*64), lm_head's input 4*64, log-probs 4*512,
    # labels and input ids (int64); RoPE cos and sin once (2 x 32 positions x 16 x 4 bytes); the loss.
    head = 4 * 64 + 4 + 4 * 64 + 4 * 64 + 4 * 512 + 8 + 8
    tokens = 2 * 32
    acts = activation_bytes(TWO, spec, p, block_size=32)
    assert acts["saved"] == tokens * (2 * layer + head) + 2 * 32 * 16 * 4 + 4 == 745_732
    assert acts["peak"] == acts["saved"] + 2 * 4 * 512 * tokens  # + gradients of log-probs and logits


def saved_tensor_bytes(model, input_ids, autocast: bool) -> int:
    """Bytes autograd keeps for backward in one forward pass (parameters excluded), by storage."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=input_ids, labels=input_ids)
    return sum(seen.values())


ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize(
    "method,dtype,gc,targets",
    [
        ("full", "fp32", False, None),
        ("full", "fp32", True, None),
        ("lora", "fp32", False, None),
        ("lora", "fp32", True, None),
        ("lora", "fp32", False, "all-linear"),
        ("full", "bf16", False, None),  # autocast over fp32 weights, as Trainer runs bf16 on a GPU
        # LoRA as train.py builds it for a 16-bit run: the base loaded in bf16, PEFT's adapters in
        # fp32, under autocast (the CPU stands in for CUDA: matmuls autocast the same way).
        ("lora", "bf16", False, None),
        ("lora", "bf16", True, None),
        ("lora", "bf16", False, "all-linear"),
    ],
)
def test_activation_model_matches_what_autograd_saves(config, tmp_path, method, dtype, gc, targets):
    """The model as offloadbench.train.load_model builds it for the run (dtype, adapters,
    gradient checkpointing), counted tensor by tensor while autograd saves them."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from offloadbench.train import load_model

    spec = spec_for(config, method, micro_batch_size=2, dtype=dtype, gradient_checkpointing=gc)
    if targets == "all-linear":
        spec["lora"]["target_modules"] = ALL_LINEAR
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TWO)).save_pretrained(tmp_path)
    spec["model"] = {"path": str(tmp_path), "revision": None, "name": "two"}
    model = load_model(spec, "cpu", dtype, zero3=False)
    if method == "lora":
        base = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
        assert base == {torch.bfloat16 if dtype == "bf16" else torch.float32}
        adapters = {p.dtype for n, p in model.named_parameters() if "lora_" in n}
        assert adapters == {torch.float32}  # PEFT's autocast_adapter_dtype, whatever the base's dtype
    model.train()
    ids = torch.randint(0, 512, (2, 32))
    p = precision(spec, "cpu", zero3=False)
    predicted = activation_bytes(TWO, spec, p, block_size=32)["saved"]
    assert saved_tensor_bytes(model, ids, autocast=dtype == "bf16") == predicted


def test_qlora_activation_model_matches_what_autograd_saves(config, tmp_path):
    """QLoRA as train.py builds it: 4-bit NF4 base (bitsandbytes' CPU kernels), prepared for k-bit
    training (non-quantized weights to fp32), LoRA adapters on q_proj and v_proj."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from offloadbench.train import quantization_config

    spec = spec_for(config, "qlora", micro_batch_size=2)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TWO, use_cache=False)).save_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=quantization_config(spec, torch.float32), device_map={"": "cpu"}
    )
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = spec["lora"]
    model = get_peft_model(
        model, LoraConfig(r=lora["r"], lora_dropout=lora["dropout"], target_modules=lora["target_modules"])
    )
    model.train()
    assert type(model.base_model.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    p = precision(spec, "cpu", zero3=False)
    predicted = activation_bytes(TWO, spec, p, block_size=32)["saved"]
    assert saved_tensor_bytes(model, torch.randint(0, 512, (2, 32)), autocast=False) == predicted


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
    assert gpu["weights"] == 2 * N_TWO + 4 * LORA_TWO  # train.py loads the base in bf16; adapters fp32
    assert gpu["gradients"] == 4 * LORA_TWO
    assert gpu["optimizer"] == 8 * LORA_TWO + 4 * LORA_TWO  # moments + foreach AdamW's temporary
    assert host["weights"] == 2 * N_TWO  # built on the CPU before Trainer moves it
    assert any("frozen base loaded in bf16" in a for a in pred["assumptions"])
    # On the CPU (dtype auto: fp32) the base stays fp32.
    cpu = predict(spec_for(config, "lora"), TWO, 32, "cpu")["predicted"]["host"]
    assert cpu["weights"] == 4 * N_TWO + 4 * LORA_TWO
    # Autocast copies only the fp32 adapter weights (r x in and out x r per adapter), not the bf16
    # base or lm_head.
    p = precision(spec_for(config, "lora"), "cuda", zero3=False)
    assert autocast_weight_copies(TWO, spec_for(config, "lora"), p) == (
        2 * (LORA_TWO // 2),  # one layer's adapters, 2 bytes per value
        0,
        2 * 2 * 8 * 64,  # layer 0: lora_A of q_proj and v_proj (input needs no gradient there)
    )
    offload = predict(spec_for(config, "lora", activation_offload=True), TWO, 32, "cuda")["predicted"]
    assert offload["host"]["activations"] == pred["activations"]["saved"]
    assert offload["gpu"]["activations"] < gpu["activations"]


def test_zero3_nvme_matches_the_measured_deepspeed_run(config, tiny):
    """results/runs/zero3_offload_nvme (DeepSpeed 0.19.8, CPU, fp32): 1 049 219 072 bytes written to
    NVMe in 40 steps."""
    n = 524_288 + 4 * (16_384 + 8_192 + 8_192 + 16_384 + 3 * 49_152 + 256) + 128 + 524_288
    assert n == 1_836_160
    spec = spec_for(config, "zero3_offload_nvme")
    pred = predict(spec, tiny, 128, "cpu")
    # Per step: fp32 master, exp_avg, exp_avg_sq, and the fp32 gradients of the two partitions of
    # at least 1 MiB (embedding and lm_head, 524 288 x 4 bytes each); the parameters fit in
    # max_in_cpu and stay in host memory.
    assert pred["nvme_written"]["per_step"] == 12 * n + 4 * 2 * 524_288 == 26_228_224
    assert pred["nvme_written"]["total"] == pytest.approx(1_049_219_072, rel=1e-3)
    host = pred["predicted"]["host"]
    # five pinned parameter swap buffers of the largest tensor ("buffer_size": "auto"), fp32
    assert host["weights"] >= 5 * 524_288 * 4
    assert host["optimizer"] == 4 * 1_836_288 * 4  # four optimizer swap buffers, 256-element aligned
    nvme = pred["predicted"]["nvme"]
    assert nvme["weights"] == 4 * 2 * 524_288  # swap files written when the model was partitioned
    assert nvme["optimizer"] == 12 * n and nvme["gradients"] == 4 * 2 * 524_288
    disk = predicted_disk_bytes(spec, tiny, 128, "cpu")
    assert disk["nvme_swap"] == nvme["total"]
    assert disk["resume_checkpoints_at_peak"] == 2  # 40 steps, a resume point every 20
    assert disk["total"] == nvme["total"] + 4 * n + 2 * (4 * n + 12 * n)


def test_deepspeed_estimate_arguments_and_meta_device_count(config, tiny):
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import LlamaConfig, LlamaForCausalLM

    est = deepspeed_estimate(spec_for(config, "zero3_offload_cpu"), tiny)
    assert est["function"].endswith("estimate_zero3_model_states_mem_needs")
    args = est["arguments"]
    # The same counts as model_to_params on a real (CPU) model: on the meta device its
    # data_ptr()-based de-duplication would collapse every tensor into one.
    real_total, real_largest = model_to_params(LlamaForCausalLM(LlamaConfig(**tiny)))
    assert (args["total_params"], args["largest_layer_params"]) == (real_total, real_largest) == (1_836_160, 524_288)
    assert args["cpu_offload"] and args["cpu_offload_params"] and args["zero_init"]
    assert est["gpu_bytes"] > 0 and est["host_bytes"] > 0
    assert deepspeed_estimate(spec_for(config, "full"), tiny) is None


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


def test_cli_writes_json_that_validates(config, tiny, tmp_path):
    spec = spec_for(config, "zero3_offload_nvme")
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    summary = {
        "device": "cpu",
        "host_rss_peak_bytes": 2_728_615_936,
        "gpu_allocated_peak_bytes": None,
        "nvme_bytes_written": 1_049_219_072,
        "checkpoint_bytes": 7_620_984,
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "memory" / "zero3_offload_nvme.json"
    argv = ["--spec", json.dumps(spec), "--model-config", str(tmp_path / "config.json"), "--block-size", "128"]
    assert main([*argv, "--summary", str(tmp_path / "summary.json"), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    validate(result, "memory.schema.json")
    assert result["ratio"]["nvme"] == pytest.approx(1.0, abs=1e-3)
    assert result["deepspeed_estimate"]["arguments"]["cpu_offload"] is True
    assert result["disk"]["final_model_measured"] == 7_620_984


def test_paper_hardware_table(capsys):
    cfg = json.loads((REPO / "configs" / "models" / "llama-3.1-8b.json").read_text())
    paper = load_config(REPO / "configs" / "paper.yaml")
    # LoRA: forward 2N + input gradients 2N + recomputed forward 2N over the matmul weights
    # (N without the embedding and norms), plus attention 4*L*T*d per pass (4 passes' worth);
    # 200 steps x 8 blocks x 512 tokens at 40% of 989 TFLOPS.
    n = 8_030_261_248 - 128256 * 4096 - 65 * 4096
    per_token = 6 * n + 4 * (4 * 32 * 512 * 4096)
    t = estimate_time(run_spec(paper, "lora"), cfg, 512)
    assert t["flops_per_token"] == per_token
    assert t["seconds"] == pytest.approx(per_token * 200 * 8 * 512 / (989e12 * 0.4))
    assert (
        main(
            [
                "--hardware-table",
                "--config",
                str(REPO / "configs" / "paper.yaml"),
                "--model-config",
                str(REPO / "configs" / "models" / "llama-3.1-8b.json"),
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "model estimate, not a measurement" in table
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "OOM expected" in rows["full"] and "OOM expected" not in rows["lora"]
    assert "**all runs**" in rows
    full = predict(run_spec(paper, "full"), cfg, 512, "cuda")["predicted"]["gpu"]
    assert full["weights"] + full["gradients"] + full["optimizer"] >= 16 * 8_030_261_248  # fp32 states: > 80 GB


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


def test_largest_tensor_is_the_largest_parameter_of_the_model():
    """What train fills into DeepSpeed's NVMe buffer_size "auto": every swapped tensor must fit."""
    eight_b = json.loads((REPO / "configs" / "models" / "llama-3.1-8b.json").read_text())
    for cfg in (TWO, eight_b):
        model = meta_model(cfg)
        assert largest_tensor(cfg) == max(p.numel() for p in model.parameters())
    assert largest_tensor(eight_b) == 128_256 * 4_096
