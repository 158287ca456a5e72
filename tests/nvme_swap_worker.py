"""Worker of tests/test_nvme_optimizer_swap.py: trains small models with DeepSpeed ZeRO-3, optimizer
offloaded once to cpu and once to nvme, and prints one JSON line per case.

    python tests/nvme_swap_worker.py CASES.json NVME_DIR

A case: {"model": "llama" | "net", "vocab", "hidden", "layers", "steps", and optionally "zero", "opt",
"aio": keys merged into zero_optimization, offload_optimizer (nvme run only) and aio}. It runs in its
own process because deepspeed.init_distributed and the CPU accelerator are process-wide.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings

from offloadbench.env import prepare_process

prepare_process()
warnings.filterwarnings("ignore")
for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
    os.environ.setdefault(key, value)

import cpuinfo  # noqa: E402
import deepspeed  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

deepspeed.utils.logger.setLevel(logging.ERROR)
# DeepSpeedCPUAdam asks py-cpuinfo for the CPU on every construction, which runs a subprocess for
# about a second: ask once (two optimizers per case).
cpuinfo.get_cpu_info = functools.lru_cache(maxsize=None)(cpuinfo.get_cpu_info)


class Net(nn.Module):
    """Embedding, residual MLP blocks with a LayerNorm each (small tensors of `hidden` elements,
    like a Llama's norms), final LayerNorm, untied output head."""

    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.emb = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)

    def forward(self, x):
        h = self.emb(x)
        for block in self.blocks:
            h = h + block(h)
        logits = self.head(self.norm(h))
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())


class Llama(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.m = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=hidden,
                intermediate_size=2 * hidden,
                num_hidden_layers=layers,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=64,
                tie_word_embeddings=False,
            )
        )

    def forward(self, x):
        return self.m(input_ids=x, labels=x).loss


def model(case: dict) -> nn.Module:
    torch.manual_seed(0)
    return {"llama": Llama, "net": Net}[case["model"]](case["vocab"], case["hidden"], case["layers"])


def ds_config(case: dict, device: str, nvme_dir: str | None) -> dict:
    offload = {"device": device, "pin_memory": False}
    if device == "nvme":
        offload.update(nvme_path=nvme_dir, **case.get("opt", {}))
    return {
        "train_micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "steps_per_print": 10**9,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.0}},
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "offload_optimizer": offload,
            "offload_param": {"device": "cpu", "pin_memory": False},
            **case.get("zero", {}),
        },
        "aio": {
            "block_size": 1048576,
            "queue_depth": 8,
            "single_submit": False,
            "overlap_events": True,
            **case.get("aio", {}),
        },
    }


def train(case: dict, cfg: dict) -> tuple[list[float], dict]:
    net = model(case)
    engine, *_ = deepspeed.initialize(model=net, model_parameters=net.parameters(), config=cfg)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, case["vocab"], (2, 16), generator=g) for _ in range(2)]
    losses = []
    for step in range(case["steps"]):
        loss = engine(batches[step % len(batches)])
        engine.backward(loss)
        engine.step()
        losses.append(loss.item())
    params = {}
    for name, p in engine.module.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):
            params[name] = p.detach().clone()
    engine.destroy()
    return losses, params


def main(cases_path: str, nvme_root: str) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    for case in json.loads(open(cases_path).read()):
        nvme_dir = tempfile.mkdtemp(prefix="swap-", dir=nvme_root)
        try:
            cpu_losses, cpu_params = train(case, ds_config(case, "cpu", None))
            nvme_cfg = ds_config(case, "nvme", nvme_dir)
            nvme_losses, nvme_params = train(case, nvme_cfg)
        finally:
            shutil.rmtree(nvme_dir, ignore_errors=True)
        row = {
            "case": case,
            "param_shapes": [list(p.shape) for p in model(case).parameters()],
            "nvme_config": nvme_cfg,
            "cpu_losses": cpu_losses,
            "nvme_losses": nvme_losses,
            "max_param_diff": max((cpu_params[k] - nvme_params[k]).abs().max().item() for k in cpu_params),
        }
        print("ROW " + json.dumps(row), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
