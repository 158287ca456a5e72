"""Worker of test_workflow's ZeRO-3 adapter-save test: one training run (offloadbench.train's own
main, same arguments) with every DeepSpeed gather and every resume-point save recorded.

    python tests/zero3_save_worker.py RECORD.json --spec ... --data ... --out ...

OFFLOADBENCH_TEST_TRAINER_SAVE=1 saves as Trainer itself does (what offloadbench did before), so that
the test shows what its record looks like for the defect.

RECORD.json: {"gathers": [{"frozen": n, "trainable": n}, ...] one per GatheredParameters from the
start of Trainer.train on (loading a model under zero.Init gathers every weight, rightly), "saves":
[{"step", "threads_before", "threads_after"}, ...] one per resume point}. Its own process:
deepspeed.zero.GatheredParameters is replaced for the whole run.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import deepspeed
import torch
from transformers import Trainer

from offloadbench.train import main
from offloadbench.training import trainer

if os.environ.get("OFFLOADBENCH_TEST_TRAINER_SAVE") == "1":
    trainer.zero3_adapter = lambda _: False

record: dict = {"gathers": [], "saves": []}
training = False
Gathered = deepspeed.zero.GatheredParameters


class RecordingGather(Gathered):
    def __init__(self, params, *args, **kwargs):
        params = [params] if isinstance(params, torch.nn.Parameter) else list(params or [])
        frozen = sum(not p.requires_grad for p in params)
        if training:
            record["gathers"].append({"frozen": frozen, "trainable": len(params) - frozen})
        super().__init__(params, *args, **kwargs)


deepspeed.zero.GatheredParameters = RecordingGather  # DeepSpeed and offloadbench look it up at call time
save_checkpoint = Trainer._save_checkpoint


def recording_save(self, *args, **kwargs):
    before = len(os.listdir("/proc/self/task"))
    save_checkpoint(self, *args, **kwargs)
    after = len(os.listdir("/proc/self/task"))
    record["saves"].append({"step": self.state.global_step, "threads_before": before, "threads_after": after})


Trainer._save_checkpoint = recording_save
train = Trainer.train


def recording_train(self, *args, **kwargs):
    global training
    training = True
    return train(self, *args, **kwargs)


Trainer.train = recording_train
out = Path(sys.argv.pop(1))
atexit.register(lambda: out.write_text(json.dumps(record)))
sys.exit(main(sys.argv[1:]))
