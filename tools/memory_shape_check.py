"""The memory model's host prediction on a model shape the profile does not train: builds a scratch
Llama of the given width and depth, trains the named runs' resolved specs on it (one process each,
as the training rule does) and prints the host memory above the runtime baseline, predicted and
measured. Needs a finished default-profile run (results/specs, results/data, the tokenizer).

    .venv/bin/python tools/memory_shape_check.py zero3 zero3_offload_cpu zero3_offload_nvme \
        --hidden 768 --intermediate 2048 --layers 6 --heads 12 --kv-heads 6 --out /tmp/shape

The resolved specs' DeepSpeed values that depend on the model's shape stay those of the profile's
model; what the host prediction counts (partitions, the optimizer, the reduce bucket) does not use
them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

from offloadbench.config import load_config
from offloadbench.launch import train_argv
from offloadbench.memory.counting import load_model_config
from offloadbench.memory.predict import compare, predict
from offloadbench.model import build_model

GIB = 2**30


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="runs of the default profile whose resolved specs to train")
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--intermediate", type=int, required=True)
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True)
    ap.add_argument("--kv-heads", type=int, required=True)
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    from transformers import AutoTokenizer

    config = load_config()
    scratch = {
        **config["model"]["scratch"],
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
    }
    model = a.out / "model"
    tok = AutoTokenizer.from_pretrained(a.results / "models" / config["model"]["name"])
    build_model(scratch, tok, seed=config["seed"]).save_pretrained(model)
    tok.save_pretrained(model)
    model_config = load_model_config(str(model))
    data = a.results / "data" / config["dataset"]["name"]
    for run in a.runs:
        spec = json.loads((a.results / "specs" / f"{run}.json").read_text())
        spec["model"] = {"name": f"{run}-shape", "path": str(model), "revision": None}
        out = a.out / run
        with (a.out / f"{run}.log").open("w") as log:
            subprocess.run(
                train_argv(spec, data, out),
                check=True,
                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        summary = json.loads((out / "summary.json").read_text())
        above = compare(predict(spec, model_config, spec["block_size"], "cpu"), summary)["above_baseline"]
        print(
            f"{run}: {summary['params_total']:,} parameters, host above baseline predicted "
            f"{above['predicted']['host'] / GIB:.3f} GiB, measured {above['measured']['host'] / GIB:.3f} GiB, "
            f"ratio {above['ratio']['host']}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
