"""`lagdpo` command line: train end to end, config files and overrides, launch commands."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
import yaml
from lagdpo_testutils import fast_settings, make_records, save_tiny

from lagdpo.cli import _parse_overrides, main
from lagdpo.errors import LagDPOError
from lagdpo.launch import launch_command, list_accelerate_configs
from lagdpo.training import load_settings


def test_cli_train_writes_model_tokenizer_and_lambda_history(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = save_tiny(tmp_path / "model")
    data = tmp_path / "pk.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records(8)))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_settings(dual_lr=0.01)))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TQDM_DISABLE": "1",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lagdpo.cli",
            "train",
            "--method",
            "lagdpo",
            "--model",
            str(model),
            "--data",
            str(data),
            "--output-dir",
            str(out),
            "--max-steps",
            "2",
            "--config",
            str(config),
            "--dual-lr",
            "0.25",
            "--lambda-init=0.1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model written to" in proc.stdout
    AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    rows = list(csv.DictReader((out / "lambda_history.csv").open()))
    assert list(rows[0]) == ["step", "dimension", "loss", "lambda"]
    assert len(rows) == 2 * 4
    # the command-line overrides won over the config file: λ_1 = 0.1 + 0.25 (log 2 − 0.5)
    assert float(rows[0]["lambda"]) == pytest.approx(0.1 + 0.25 * (0.693147 - 0.5), abs=1e-5)
    saved = yaml.safe_load((out / "lagdpo_config.yaml").read_text())
    assert saved["dual_lr"] == 0.25 and saved["method"] == "lagdpo"


def test_overrides_parse_yaml_values_and_reject_unknown_names():
    got = _parse_overrides(
        ["--dual-lr", "0.1", "--dimension_weights", "[1, 1, 2, 2]", "--use-peft"]
    )
    assert got == {"dual_lr": 0.1, "dimension_weights": [1, 1, 2, 2], "use_peft": True}
    with pytest.raises(LagDPOError, match="did you mean --dual-lr"):
        _parse_overrides(["--dual-rl", "0.1"])


def test_config_file_then_overrides_and_shipped_paper_config():
    paper = load_settings("paper")
    assert paper["per_device_train_batch_size"] * 4 * paper["gradient_accumulation_steps"] == 16
    assert paper["num_train_epochs"] == 3 and paper["optim"].startswith("adamw")
    assert load_settings("paper", {"epsilon": 0.3})["epsilon"] == 0.3
    assert load_settings("paper-lora")["use_peft"] is True


def test_unknown_setting_and_method_errors(tmp_path, capsys):
    from lagdpo.config import build_config
    from lagdpo.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'epsilon'"):
        build_config({"epsilo": 0.1, "output_dir": str(tmp_path), "use_cpu": True, "bf16": False})
    with pytest.raises(ConfigError, match="method='dpo-x' is unknown"):
        build_config(
            {"method": "dpo-x", "output_dir": str(tmp_path), "use_cpu": True, "bf16": False}
        )
    assert (
        main(
            [
                "train",
                "--method",
                "lagdpo",
                "--model",
                "m",
                "--data",
                "d",
                "--output-dir",
                str(tmp_path),
                "--nonsense",
                "1",
            ]
        )
        == 2
    )
    assert "unknown setting --nonsense" in capsys.readouterr().err


def test_accelerate_launch_command_for_each_shipped_config(capsys):
    names = list_accelerate_configs()
    assert {"ddp-lora", "zero2", "zero3", "fsdp"} <= set(names)
    for name in names:
        cmd = launch_command(name, 4, [])
        path = cmd[cmd.index("--config_file") + 1]
        with open(path) as fh:
            assert "distributed_type" in yaml.safe_load(fh)
    args = [
        "train",
        "--method",
        "lagdpo",
        "--model",
        "m",
        "--data",
        "d.csv",
        "--output-dir",
        "o",
        "--accelerate-config",
        "zero3",
        "--num-processes",
        "4",
        "--print-command",
        "--epsilon",
        "0.4",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out.split()
    assert (
        "launch" in printed
        and "--num_processes" in printed
        and printed[printed.index("--num_processes") + 1] == "4"
    )
    tail = printed[printed.index("-m") :]
    assert tail[:3] == ["-m", "lagdpo.cli", "train"]
    assert (
        "--accelerate-config" not in tail and "--print-command" not in tail and "--epsilon" in tail
    )
    assert printed[printed.index("--config_file") + 1].endswith("zero3.yaml")


def test_validate_and_configs_commands(tmp_path, capsys):
    data = tmp_path / "pk.json"
    data.write_text(json.dumps(make_records(6)))
    assert main(["validate", str(data)]) == 0
    assert "6 records" in capsys.readouterr().out
    assert main(["configs"]) == 0
    assert "zero2" in capsys.readouterr().out
