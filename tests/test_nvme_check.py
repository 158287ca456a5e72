"""offloadbench.nvme_check: which ZeRO-3 NVMe optimizer offload runs DeepSpeed would train wrongly.
The rule itself is checked against real DeepSpeed runs in tests/test_nvme_optimizer_swap.py; these
are its bookkeeping on shapes alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from offloadbench import nvme_check
from offloadbench.nvme_check import (
    SAFE_SUB_GROUP_SIZE,
    direct_io_alignment,
    fast_init_sub_groups_on_nvme,
    nvme_optimizer_swap_problem,
    sub_groups,
    swapped_gradient_fragments,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((REPO / "configs" / "deepspeed" / "zero3_offload_nvme.json").read_text())


def llama_shapes(vocab: int, hidden: int, layers: int, ffn: int, kv_heads: int, heads: int) -> list[tuple[int, ...]]:
    """LlamaForCausalLM's parameters in model.parameters() order (untied head)."""
    kv = hidden // heads * kv_heads
    layer = [
        (hidden, hidden),
        (kv, hidden),
        (kv, hidden),
        (hidden, hidden),
        (ffn, hidden),
        (ffn, hidden),
        (hidden, ffn),
        (hidden,),
        (hidden,),
    ]
    return [(vocab, hidden)] + layer * layers + [(hidden,), (vocab, hidden)]


REPORTED = llama_shapes(2048, 192, 3, 384, 2, 4)  # hidden 192, 3 layers, vocab 2048: departs
DEFAULT_PROFILE = llama_shapes(4096, 128, 4, 384, 2, 4)  # configs/config.yaml model.scratch


def nvme(**zero) -> dict:
    return {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme"}, **zero}}


def test_llama_shapes_are_the_order_transformers_gives_deepspeed():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=2048,
        hidden_size=192,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    assert [tuple(p.shape) for p in model.parameters() if p.requires_grad] == REPORTED


def test_the_reported_model_reads_the_lm_head_gradient_to_a_misaligned_offset():
    reason = nvme_optimizer_swap_problem(REPORTED, SHIPPED)
    offset = sum(math.prod(s) for s in REPORTED[:-1])  # lm_head comes after everything else
    assert offset * 4 % 512 == 256
    assert reason is not None
    assert f"#{len(REPORTED) - 1} (shape (2048, 192))" in reason and f"byte offset {offset * 4} " in reason
    assert "sub_group_size" in reason


def test_the_work_around_keeps_every_swapped_gradient_at_offset_zero():
    cfg = json.loads(json.dumps(SHIPPED))
    cfg["zero_optimization"]["sub_group_size"] = SAFE_SUB_GROUP_SIZE
    for shapes in (REPORTED, DEFAULT_PROFILE, llama_shapes(3000, 100, 2, 300, 1, 4)):
        assert nvme_optimizer_swap_problem(shapes, cfg) is None
        assert nvme_optimizer_swap_problem(shapes, cfg, world_size=2) is None
        assert {f["offset"] for f in swapped_gradient_fragments(shapes, cfg)} == {0}


def test_the_default_profile_is_fine_on_one_rank_but_not_on_two():
    """Hidden 128: every tensor is a multiple of 128 fp32 elements; halved on two ranks, the final
    norm's 64 elements put the lm_head off by 256 bytes (seen with DeepSpeed, two gloo ranks)."""
    assert nvme_optimizer_swap_problem(DEFAULT_PROFILE, SHIPPED) is None
    assert nvme_optimizer_swap_problem(DEFAULT_PROFILE, SHIPPED, world_size=2) is not None


def test_hidden_sizes():
    broken = {
        h: nvme_optimizer_swap_problem(llama_shapes(8192, h, 2, 2 * h, 2, 4), SHIPPED) is not None
        for h in (64, 96, 128, 192, 256, 320, 384)
    }
    assert broken == {64: True, 96: True, 128: False, 192: True, 256: False, 320: True, 384: False}


def test_nothing_to_refuse_without_nvme_optimizer_offload():
    assert (
        nvme_optimizer_swap_problem(
            REPORTED, {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
        )
        is None
    )
    assert (
        nvme_optimizer_swap_problem(
            REPORTED, {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "nvme"}}}
        )
        is None
    )
    assert nvme_optimizer_swap_problem(REPORTED, {}) is None


def test_only_partitions_of_min_aio_bytes_are_swapped():
    # a sub-group under 1 MiB stays in memory whole
    assert swapped_gradient_fragments([(64,), (1000, 200)], nvme()) == []
    # block_size 2 MiB raises min_aio_bytes above the 1.5 MiB lm_head: nothing is read back
    assert nvme_optimizer_swap_problem(REPORTED, nvme(), 1) is not None
    assert swapped_gradient_fragments(REPORTED, {**nvme(), "aio": {"block_size": 2 * 1024**2}}) == []


def test_a_gradient_is_split_into_an_aligned_head_and_a_remainder_kept_in_memory():
    n = 262_144 + 100
    frags = swapped_gradient_fragments([(64,), (n,)], nvme())
    assert frags == [{"param": 1, "sub_group": 0, "offset": 64, "numel": 262_144, "offset_bytes": 256}]
    # intra_op_parallelism 2: 2048-byte alignment of lengths, 512 elements
    frags = swapped_gradient_fragments([(n + 412,)], {**nvme(), "aio": {"intra_op_parallelism": 2}})
    assert [(f["offset"], f["numel"]) for f in frags] == [(0, 262_144 + 512)]


def test_sub_groups_close_once_they_reach_sub_group_size():
    assert sub_groups([3, 3, 3], 5) == [[3, 3], [3]]
    assert sub_groups([3, 3, 3], 9) == [[3, 3, 3]]
    assert sub_groups([3, 3, 3], 1) == [[3], [3], [3]]
    # offsets restart in each sub-group: with the split right before the head it is read to offset 0
    assert nvme_optimizer_swap_problem(REPORTED, nvme(sub_group_size=725_000)) is None
    assert nvme_optimizer_swap_problem(REPORTED, nvme(sub_group_size=725_200)) is not None


def test_half_precision_master_weights_halve_the_byte_offsets():
    shapes = [(128,), (1024, 1024)]  # 128 elements before the big tensor
    assert nvme_optimizer_swap_problem(shapes, nvme()) is None  # 512 bytes
    half = {**nvme(), "bf16": {"enabled": True, "bf16_master_weights_and_grads": True}}
    assert nvme_optimizer_swap_problem(shapes, half) is not None  # 256 bytes


def test_the_alignment_is_a_parameter():
    assert nvme_optimizer_swap_problem(REPORTED, SHIPPED, direct_io_alignment=4) is None  # no O_DIRECT constraint
    # a 4 KiB-sector disk also refuses offsets that are 512- but not 4096-byte aligned
    assert nvme_optimizer_swap_problem(DEFAULT_PROFILE, SHIPPED, direct_io_alignment=4096) is not None


def test_fast_init_with_parameters_beyond_max_in_cpu():
    def both(**offload_param) -> dict:
        return {
            "zero_optimization": {
                "stage": 3,
                "sub_group_size": SAFE_SUB_GROUP_SIZE,
                "offload_optimizer": {"device": "nvme", "fast_init": True},
                "offload_param": {"device": "nvme", **offload_param},
            }
        }

    assert fast_init_sub_groups_on_nvme(REPORTED, both()) == []  # all fit in the default max_in_cpu
    assert nvme_optimizer_swap_problem(REPORTED, both()) is None
    assert fast_init_sub_groups_on_nvme(REPORTED, both(max_in_cpu=0)) == [0, len(REPORTED) - 1]
    assert fast_init_sub_groups_on_nvme(REPORTED, both(max_in_cpu=500_000)) == [len(REPORTED) - 1]
    assert "fast_init" in nvme_optimizer_swap_problem(REPORTED, both(max_in_cpu=0))


def test_unresolved_auto_values_are_an_error():
    with pytest.raises(ValueError, match="zero_optimization.sub_group_size"):
        nvme_optimizer_swap_problem(REPORTED, nvme(sub_group_size="auto"))


def test_direct_io_alignment_of_a_directory(tmp_path):
    assert direct_io_alignment(tmp_path) in {None, 4, 64, 512, 1024, 2048, 4096}
    assert list(tmp_path.iterdir()) == []
    assert nvme_check.DIRECT_IO_ALIGNMENT == 512
