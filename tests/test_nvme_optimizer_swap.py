"""ZeRO-3 NVMe optimizer offload against CPU optimizer offload, step by step, with DeepSpeed alone.

DeepSpeed reads each swapped fp32 gradient back into its sub-group's page-locked gradient buffer at
the parameter's offset; an O_DIRECT read to an address that is not 512-byte aligned fails silently
and the optimizer steps on stale memory (docs/nvme-divergence.md). Every case here trains the same
model on the same batches twice in one worker process (tests/nvme_swap_worker.py) and checks that
the two runs are bitwise identical exactly where offloadbench.nvme_check predicts no problem; the
work-around cases (sub_group_size 1) must be identical whatever the shapes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from offloadbench.nvme_check import (
    DIRECT_IO_ALIGNMENT,
    SAFE_SUB_GROUP_SIZE,
    direct_io_alignment,
    nvme_optimizer_swap_problem,
)

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("nvme_swap_worker.py")
WORKAROUND = {"sub_group_size": SAFE_SUB_GROUP_SIZE}
BUG = dict(model="llama", vocab=2048, hidden=192, layers=3)  # the shape the divergence was reported on

# name -> (case, identical with 512-byte O_DIRECT alignment?)
CASES = {
    "llama-h192-reported": (BUG, False),
    "llama-h192-workaround": ({**BUG, "zero": WORKAROUND}, True),
    # the pipelined swapper needs 8 swap buffers once there are several swappable sub-groups
    "llama-h192-workaround-pipelined": (
        {**BUG, "zero": WORKAROUND, "opt": {"pipeline_read": True, "pipeline_write": True, "buffer_count": 8}},
        True,
    ),
    "llama-h128": (dict(model="llama", vocab=4096, hidden=128, layers=2), True),
    "llama-h64": (dict(model="llama", vocab=4096, hidden=64, layers=2), False),
    # hidden 192, yet the 2 x 192-element LayerNorm per block keeps the head 512-byte aligned
    "net-h192-aligned-by-sum": (dict(model="net", vocab=2048, hidden=192, layers=2), True),
    "net-h100": (dict(model="net", vocab=3000, hidden=100, layers=2), False),
    "net-h100-workaround": (dict(model="net", vocab=3000, hidden=100, layers=2, zero=WORKAROUND), True),
    # min_aio_bytes 2 MiB: no gradient partition is large enough to be swapped
    "llama-h192-block_size-2MiB": ({**BUG, "aio": {"block_size": 2 * 1024**2}}, True),
    # sub-groups split right before / right after the head
    "llama-h192-sub_group_size-725000": ({**BUG, "zero": {"sub_group_size": 725_000}}, True),
    "llama-h192-sub_group_size-725200": ({**BUG, "zero": {"sub_group_size": 725_200}}, False),
}
STEPS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def swap_runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("nvme-swap")
    alignment = direct_io_alignment(root)
    if alignment is None:
        pytest.skip(f"{root} does not support O_DIRECT, which DeepSpeed's NVMe offload needs")
    cases = root / "cases.json"
    cases.write_text(json.dumps([{**case, "name": name, "steps": STEPS} for name, (case, _) in CASES.items()]))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "MASTER_PORT": str(free_port()),
        "OMP_NUM_THREADS": "1",
    }
    # The first run on a machine may build DeepSpeed's cpu_adam and async_io ops (minutes).
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(cases), str(root)], capture_output=True, text=True, env=env, timeout=1800
    )
    rows = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    assert proc.returncode == 0 and len(rows) == len(CASES), proc.stderr[-4000:]
    return {"alignment": alignment, "rows": {row["case"]["name"]: row for row in rows}}


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_nvme_optimizer_offload_equals_cpu_offload_exactly_where_predicted(swap_runs, name):
    row = swap_runs["rows"][name]
    problem = nvme_optimizer_swap_problem(row["param_shapes"], row["nvme_config"], 1, swap_runs["alignment"])
    identical = row["nvme_losses"] == row["cpu_losses"] and row["max_param_diff"] == 0.0
    summary = f"cpu {row['cpu_losses']} nvme {row['nvme_losses']} max |dparam| {row['max_param_diff']:.3g}"
    assert identical == (problem is None), f"{summary}; predicted: {problem}"
    expected = CASES[name][1]
    if expected or swap_runs["alignment"] == DIRECT_IO_ALIGNMENT:
        assert identical == expected, summary
