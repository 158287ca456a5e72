"""The one training entry point: method (full, lora, qlora) and offload are configuration.

Launched by the ``train`` rule for every run in the config, one process per rank, with the run's
resolved spec (results/specs/<run>.json, written by ``python -m offloadbench.resolve``):

    python -m offloadbench.train --spec results/specs/<run>.json --data results/data/<dataset> \
        --out results/runs/<run>
    python -m torch.distributed.run --standalone --nproc_per_node <world_size> -m offloadbench.train ...
    srun ... python -m offloadbench.launch --nnodes N ... -m offloadbench.train ...  # several machines

and by the ``pretrain`` rule with ``--save-model results/models/<model>``; offloadbench.launch
builds these commands. The run itself is offloadbench.training: model loading (training.model),
offload mechanisms (training.offload), the Trainer (training.trainer), measurements
(training.recorder) and the run's life cycle (training.lifecycle, training.run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from .env import exit_fast, hide_libraries, prepare_process
from .errors import PreflightError
from .spec import canonical_json, load_spec
from .training import watchdog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offloadbench.train", description=__doc__.split("\n")[0])
    parser.add_argument("--spec", required=True, help="resolved run spec (JSON text or file)")
    parser.add_argument("--data", required=True, type=Path, help="tokenized dataset folder (save_to_disk)")
    parser.add_argument("--out", required=True, type=Path, help="run folder: metrics.jsonl, summary.json, model/")
    parser.add_argument("--save-model", type=Path, default=None, help="write the final model here instead of OUT/model")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the spec's model untrained; write OUT")
    args = parser.parse_args(argv)
    watchdog.start()  # never outlive the workflow (training/watchdog.py)
    prepare_process()
    # DeepSpeed's ZeRO-3 calls torch.distributed APIs that torch deprecates, once per step; the
    # warning is not actionable here and would bury the log.
    import warnings

    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.\w+` is deprecated", category=FutureWarning)
    spec = load_spec(args.spec)
    print("spec:", canonical_json(spec), file=sys.stderr)
    # Before transformers is imported: what the run does not use is never loaded (~1.2 s a job).
    hidden = hide_libraries(spec)
    print(f"[offloadbench] not imported by this run: {', '.join(hidden) or 'nothing'}", file=sys.stderr)
    from .training.lifecycle import record_failure
    from .training.run import evaluate_base, run

    if args.eval_only:
        print(json.dumps(evaluate_base(spec, args.data, args.out)), file=sys.stderr)
        return 0
    t0 = time.perf_counter()
    try:
        summary = run(spec, args.data, args.out, args.save_model)
    except PreflightError as err:
        # The run cannot work as configured: fail the job, nothing was trained.
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - every training failure is recorded, then the workflow goes on
        traceback.print_exc()
        failed = record_failure(spec, args.out, err, time.perf_counter() - t0)
        print(
            f"[offloadbench] run {spec['run']} ended with status {failed['status']}: {failed['error']} "
            f"(recorded in {args.out / 'summary.json'}; delete {args.out} to try it again)",
            file=sys.stderr,
        )
        return 0
    print(
        json.dumps({k: summary[k] for k in ("run", "steps", "train_loss_final", "eval_loss", "tokens_per_s")}),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    exit_fast(main())
