"""A training job imports only the optional libraries its run uses (offloadbench.env.hide_libraries):
transformers' Trainer would otherwise load peft and bitsandbytes in every job (~1.2 s of start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from offloadbench.env import libraries_needed


@pytest.mark.parametrize(
    "spec, needed",
    [
        ({"method": "full", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}, set()),
        ({"method": "lora", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}, {"peft"}),
        ({"method": "qlora", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}, {"peft", "bitsandbytes"}),
        ({"method": "full", "deepspeed": None, "training": {"optimizer": "paged_adamw_8bit"}}, {"bitsandbytes"}),
        (
            {"method": "full", "deepspeed": "configs/deepspeed/zero3.json", "training": {"optimizer": "adamw_torch"}},
            {"deepspeed"},
        ),
        (
            {"method": "qlora", "deepspeed": "z.json", "training": {"optimizer": "adamw_torch"}},
            {"peft", "bitsandbytes", "deepspeed"},
        ),
        ({"name": "base-eval", "training": {"optimizer": "adamw_torch"}}, set()),
    ],
)
def test_each_method_needs_its_libraries(spec, needed):
    assert libraries_needed(spec) == needed


PROBE = textwrap.dedent(
    """
    import importlib.util, json, sys
    from offloadbench.env import hide_libraries
    hidden = hide_libraries(json.loads(sys.argv[1])) if sys.argv[2] == "hide" else []
    from transformers import Trainer  # what every training job imports
    from transformers.utils import is_bitsandbytes_available, is_peft_available
    from accelerate.utils import is_deepspeed_available
    print(json.dumps({
        "hidden": hidden,
        "loaded": [m for m in ("bitsandbytes", "peft", "deepspeed") if sys.modules.get(m) is not None],
        "available": {"peft": is_peft_available(), "bitsandbytes": is_bitsandbytes_available(),
                      "deepspeed": bool(is_deepspeed_available())},
        "find_spec": importlib.util.find_spec("peft") is not None,
    }))
    """
)


def probe(spec: dict, how: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(spec), how], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_a_full_run_never_loads_peft_bitsandbytes_or_deepspeed():
    spec = {"method": "full", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}
    # Without hiding them, Trainer's import loads peft and bitsandbytes: what this guards against.
    plain = probe(spec, "plain")
    assert {"peft", "bitsandbytes"} <= set(plain["loaded"]) and plain["available"]["peft"]
    hidden = probe(spec, "hide")
    assert hidden["hidden"] == ["bitsandbytes", "peft", "deepspeed"]
    assert hidden["loaded"] == []
    # and transformers / accelerate see them as not installed, so nothing reaches for them later
    assert hidden["available"] == {"peft": False, "bitsandbytes": False, "deepspeed": False}
    assert hidden["find_spec"] is False


def test_an_adapter_run_keeps_peft_and_a_qlora_run_bitsandbytes():
    lora = probe({"method": "lora", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}, "hide")
    assert lora["hidden"] == ["bitsandbytes", "deepspeed"] and lora["loaded"] == ["peft"]
    qlora = probe({"method": "qlora", "deepspeed": None, "training": {"optimizer": "adamw_torch"}}, "hide")
    assert qlora["hidden"] == ["deepspeed"] and qlora["available"]["bitsandbytes"]
