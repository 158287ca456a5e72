"""python -m offloadbench.memory: the JSON the rule memory writes validates against its schema, and
the README's hardware table with its time estimate."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, spec_for, validate

from offloadbench.config import load_config
from offloadbench.memory.cli import main
from offloadbench.memory.estimate import estimate_time
from offloadbench.memory.predict import predict
from offloadbench.spec import run_spec


def test_cli_writes_json_that_validates(config, tiny, tmp_path):
    # The settings of the base-model NVMe run whose bytes written are the measurement below (40
    # steps of 4 x 2 blocks, a checkpoint every 20); the default profile now runs it at memory scale.
    spec = spec_for(
        config, "zero3_offload_nvme", max_steps=40, micro_batch_size=4, gradient_accumulation_steps=2, save_steps=20
    )
    spec["training"]["eval_max_blocks"] = None
    spec["model_size"] = "base"
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
    first = {}  # the hardware table's rows (the time table below repeats the names)
    for line in table.splitlines():
        if line.startswith("| "):
            first.setdefault(line.split("|")[1].strip(), line)
    steps = {name: first[name].split("|")[3].strip() for name in ("lora", "zero3_offload_nvme")}
    assert steps == {"lora": "200", "zero3_offload_nvme": "30"}, "each run's own steps, not the profile's default"
    full = predict(run_spec(paper, "full"), cfg, 512, "cuda")["predicted"]["gpu"]
    assert full["weights"] + full["gradients"] + full["optimizer"] >= 16 * 8_030_261_248  # fp32 states: > 80 GB


def test_one_call_gives_every_run_what_a_call_each_would(config, tiny, tmp_path):
    """The rule runs the memory model once for all runs (one DeepSpeed import): each output is the
    one a call for that run alone writes, each run with its own model config and summary."""
    wide = {**tiny, "hidden_size": 2 * tiny["hidden_size"], "intermediate_size": 2 * tiny["intermediate_size"]}
    runs = {
        "zero3_offload_nvme": (
            spec_for(config, "zero3_offload_nvme"),
            wide,
            {"device": "cpu", "host_rss_peak_bytes": 3e9},
        ),
        "qlora": (spec_for(config, "qlora"), tiny, {"device": "cpu", "host_rss_peak_bytes": 7e8}),
        "full": (spec_for(config, "full"), tiny, {"device": "cpu", "host_rss_peak_bytes": 6e8}),
    }
    args = {"spec": [], "model-config": [], "summary": [], "out": []}
    alone = {}
    for name, (spec, model, summary) in runs.items():
        (tmp_path / name).mkdir()
        files = {k: tmp_path / name / f"{k}.json" for k in ("spec", "model-config", "summary")}
        for k, value in zip(files, (spec, model, summary), strict=True):
            files[k].write_text(json.dumps(value))
        for k, path in files.items():
            args[k].append(str(path))
        args["out"].append(str(tmp_path / "all" / f"{name}.json"))
        one = [x for k, path in files.items() for x in (f"--{k}", str(path))]
        assert main([*one, "--out", str(tmp_path / name / "out.json")]) == 0
        alone[name] = json.loads((tmp_path / name / "out.json").read_text())
    assert main([x for k, values in args.items() for x in (f"--{k}", *values)]) == 0
    for name in runs:
        assert json.loads((tmp_path / "all" / f"{name}.json").read_text()) == alone[name], name
    narrow = tmp_path / "narrow.json"
    assert main(["--spec", args["spec"][0], "--model-config", args["model-config"][1], "--out", str(narrow)]) == 0
    params = [
        r["deepspeed_estimate"]["arguments"]["total_params"]
        for r in (alone["zero3_offload_nvme"], json.loads(narrow.read_text()))
    ]
    assert params[0] > 2 * params[1], "each run read its own model config"
    assert alone["zero3_offload_nvme"]["deepspeed_estimate"] and alone["full"]["deepspeed_estimate"] is None


def test_counts_that_do_not_pair_up_are_refused(config, tiny, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(tiny))
    spec = json.dumps(spec_for(config, "full"))
    with pytest.raises(SystemExit):
        main(["--spec", spec, spec, "--model-config", str(tmp_path / "config.json"), "--out", str(tmp_path / "a.json")])
    assert "--out: 1 given for 2 --spec" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()
    (tmp_path / "summary.json").write_text(json.dumps({"device": "cpu"}))
    outs = [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    with pytest.raises(SystemExit):  # one run's measurements are never paired with every run
        main(
            [
                "--spec",
                spec,
                spec,
                "--model-config",
                str(tmp_path / "config.json"),
                "--summary",
                str(tmp_path / "summary.json"),
                "--out",
                *outs,
            ]
        )
    assert "--summary: 1 given for 2 --spec; give one for every --spec\n" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()


def test_the_paper_profiles_page_shows_the_tables_the_command_prints(capsys):
    """docs/paper-profile.md pastes both tables of --hardware-table: every row of them is there as
    printed, so a change to the profile or the memory model that moves a number fails here until
    the page is regenerated."""
    model = str(REPO / "configs" / "models" / "llama-3.1-8b.json")
    assert main(["--hardware-table", "--config", str(REPO / "configs" / "paper.yaml"), "--model-config", model]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    page = (REPO / "docs" / "paper-profile.md").read_text().splitlines()
    missing = [line for line in printed if line not in page]
    assert len(printed) > 30 and not missing, missing[:3]
