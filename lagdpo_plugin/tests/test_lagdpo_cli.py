"""`lagdpo` command line: train end to end, config files and overrides, launch commands."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


# --- documented options run as a user types them (issue 12, item 18) ---------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def _files(tmp_path, **settings):
    data = tmp_path / "pk.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records(8)))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_settings(**settings)))
    return str(data), str(config)


def _history(path):
    return [
        (int(r["step"]), r["dimension"], float(r["loss"]), float(r["lambda"]))
        for r in csv.DictReader(open(path))
    ]


def test_ablate_command_runs_every_grid_point_and_writes_the_summary(tiny_dir, tmp_path, capsys):
    data, config = _files(tmp_path)
    out = tmp_path / "grid"
    argv = ["ablate", "--model", str(tiny_dir), "--data", data, "--output-dir", str(out)]
    argv += ["--epsilons", "0.3,5", "--dual-lrs", "0.5", "--max-steps", "2", "--config", config]
    assert main([*argv, "--lambda-init", "0.1"]) == 0
    assert f"ablation summary in {out / 'ablation_summary.csv'}" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "ablation_summary.csv").open()))
    assert [(r["epsilon"], r["dimension"]) for r in rows] == [
        (eps, d) for eps in ("0.3", "5.0") for d in "ATEC"
    ]
    for r in rows:
        assert r["step"] == "2" and r["dual_lr"] == "0.5"
        run = _history(Path(r["run_dir"]) / "lambda_history.csv")
        first = next(x for x in run if x[0] == 1 and x[1] == r["dimension"])
        eps = float(r["epsilon"])
        # λ_1 = clip(0.1 + 0.5 (log 2 − ε)), λ_2 = clip(λ_1 + 0.5 (L_2 − ε)) with L_2 the summary's loss
        lam1 = max(0.0, 0.1 + 0.5 * (0.693147 - eps))
        assert first[3] == pytest.approx(lam1, abs=1e-5)
        lam2 = max(0.0, lam1 + 0.5 * (float(r["loss"]) - eps))
        assert float(r["lambda"]) == pytest.approx(lam2, abs=1e-5)
    assert {Path(r["run_dir"]).name for r in rows} == {"eps0.3_dual0.5", "eps5_dual0.5"}


def test_resume_without_a_path_continues_from_the_last_checkpoint(tiny_dir, tmp_path, capsys):
    data, config = _files(tmp_path, save_strategy="steps", save_steps=1, dual_lr=0.5)
    out = tmp_path / "run"
    argv = ["train", "--method", "lagdpo", "--model", str(tiny_dir), "--data", data]
    argv += ["--output-dir", str(out), "--config", config]
    assert main([*argv, "--max-steps", "2"]) == 0
    before = _history(out / "lambda_history.csv")
    assert main([*argv, "--max-steps", "3", "--resume"]) == 0
    after = _history(out / "lambda_history.csv")
    assert after[: len(before)] == before  # the restored history, not a fresh start
    assert [x[0] for x in after] == [1] * 4 + [2] * 4 + [3] * 4
    for d in "ATEC":  # step 3 continues from the multipliers of step 2
        lam2 = next(x[3] for x in before if x[:2] == (2, d))
        _, _, loss3, lam3 = next(x for x in after if x[:2] == (3, d))
        assert lam3 == pytest.approx(max(0.0, lam2 + 0.5 * (loss3 - 0.5)), abs=1e-6)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3 and not (out / "checkpoint-4").exists()
    capsys.readouterr()
    assert main([*argv[:-4], "--output-dir", str(tmp_path / "fresh"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume: no checkpoint-N folder in" in err


def test_help_config_lists_each_plugin_setting_with_its_default(capsys):
    from dataclasses import MISSING, fields

    from lagdpo.config import LagDPOConfig

    assert main(["train", "--help-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    shown = {}
    for line in lines[:-1]:
        name, _, rest = line.partition(" ")
        shown[name] = yaml.safe_load(rest.rsplit("[default: ", 1)[1].removesuffix("]"))
    own = set(LagDPOConfig.__dataclass_fields__) - set(LagDPOConfig.__mro__[1].__dataclass_fields__)
    for f in fields(LagDPOConfig):
        if f.name in own:
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            assert shown[f"--{f.name.replace('_', '-')}"] == default, f.name
    assert shown["--epsilon"] == 0.5 and shown["--dual-lr"] == 0.05
    assert shown["--sacpo-stages"] == ["E,C", "A,T"] and shown["--logging-steps"] == 1
    assert shown["--learning-rate"] == 1e-6 and shown["--beta"] == 0.1  # TRL's DPOConfig
    assert "accepted as well" in lines[-1]


def test_console_script_validate_counts_active_dimensions(tmp_path):
    exe = shutil.which("lagdpo")
    assert exe, "the `lagdpo` console script is not installed (pip install -e ./lagdpo_plugin)"
    data = tmp_path / "pk.csv"
    records = make_records(6)  # masks ATEC, EA, T, CE, AC, TEC
    with data.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows({**r, "mask": ",".join(r["mask"])} for r in records)
    proc = subprocess.run(
        [exe, "validate", str(data)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "6 records; active per dimension: A=3, T=3, E=4, C=4"
    bad = subprocess.run(
        [exe, "validate", str(tmp_path / "missing.csv")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "does not exist" in bad.stderr


def test_train_finishes_when_the_reader_of_its_output_goes_away(tmp_path):
    """`lagdpo train ... 2>&1 | head -1`: after the first line the reader exits; the run still
    trains, saves the model and exits 0 (stderr's progress bars raised BrokenPipeError and
    aborted it with status 1 before anything was saved)."""
    from transformers import AutoModelForCausalLM

    model = save_tiny(tmp_path / "model")
    data = tmp_path / "pk.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records(8)))
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(fast_settings(disable_tqdm=False)))
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("TQDM_DISABLE", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lagdpo.cli", "train", "--method", "lagdpo", "--model", str(model),
         "--data", str(data), "--output-dir", str(out), "--max-steps", "2", "--config",
         str(config)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    assert proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `head -1` does
    assert proc.wait(timeout=300) == 0
    AutoModelForCausalLM.from_pretrained(out)
    assert (out / "lambda_history.csv").read_text().count("\n") == 1 + 2 * 4
