"""Shipped configs and setting types, as a user meets them (issue 12, items 11 and 12).

Every shipped training config must build TRL's/transformers' arguments with the installed versions
and train on the tiny model through the `lagdpo` console script; values such as ``5e-3`` (a string
to YAML 1.1) must reach the optimizer as numbers; a wrong type is one line naming the setting.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess

import pytest
import yaml
from lagdpo_testutils import fast_settings, make_records, save_tiny

from lagdpo.cli import main
from lagdpo.config import build_config, coerce_settings
from lagdpo.errors import ConfigError
from lagdpo.training import CONFIG_DIR, load_settings, train

SHIPPED = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TQDM_DISABLE": "1"}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def pk_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pk.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in make_records(8)))
    return path


def test_the_shipped_configs_are_the_documented_ones():
    assert SHIPPED == ["paper", "paper-lora"]


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_builds_dpo_and_sft_arguments_with_its_values(name, tmp_path):
    from lagdpo.sft import sft_config_from_settings

    settings = load_settings(name)
    cfg = build_config({**settings, "output_dir": str(tmp_path), "use_cpu": True, "bf16": False})
    for key, value in settings.items():
        if key in ("bf16", "report_to"):  # bf16 off on CPU; report_to "none" becomes []
            continue
        got = getattr(cfg, key)
        assert getattr(got, "value", got) == value, key  # enums compare by their value
    # The paper's 10 % warmup (§6.2): 10 of 100 steps, 1 of 3 epochs × 84 steps ≈ 26.
    assert cfg.get_warmup_steps(100) == 10 and cfg.get_warmup_steps(252) == 26
    assert cfg.learning_rate == pytest.approx(1e-6 if name == "paper" else 1e-5)
    sft = sft_config_from_settings({**settings, "output_dir": str(tmp_path), "use_cpu": True})
    assert sft.get_warmup_steps(100) == 10 and sft.learning_rate == cfg.learning_rate


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_trains_two_steps_from_the_command_line(
    name, tiny_dir, pk_file, tmp_path, capsys
):
    out = tmp_path / "out"
    argv = ["train", "--method", "lagdpo", "--config", name, "--model", str(tiny_dir)]
    argv += ["--data", str(pk_file), "--output-dir", str(out), "--max-steps", "2"]
    if name == "paper":  # the installed console script piped into `head -1`, as a user types it
        exe = shutil.which("lagdpo")
        assert exe, "the `lagdpo` console script is not installed (pip install -e ./lagdpo_plugin)"
        with subprocess.Popen(
            [exe, *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            first = proc.stdout.readline()
            proc.stdout.close()  # what `head -1` does after one line
            stderr = proc.stderr.read()
            rc = proc.wait(timeout=300)
        assert rc == 0, stderr[-3000:]
        assert "'loss'" in first and "'lagrangian'" in first  # the first step's log line
        assert "Traceback" not in stderr and "deprecated" not in stderr
    else:  # the same argv through the CLI's entry function (saves a process start)
        assert main(argv) == 0
        assert f"lagdpo model written to {out}" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "lambda_history.csv").open()))
    assert [(r["step"], r["dimension"]) for r in rows] == [
        (str(s), d) for s in (1, 2) for d in "ATEC"
    ]
    # λ_k after step 1 = 0 + η_λ (log 2 − ε) with the config's η_λ = 0.05 and ε = 0.5
    assert float(rows[0]["lambda"]) == pytest.approx(0.05 * (0.693147 - 0.5), abs=1e-5)
    state = json.loads(next(out.glob("checkpoint-*/trainer_state.json")).read_text())
    lrs = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h]
    peak = 1e-6 if name == "paper" else 1e-5
    assert lrs == pytest.approx([0.0, peak])  # one warmup step (10 % of 2, rounded up), cosine
    saved = yaml.safe_load((out / "lagdpo_config.yaml").read_text())
    assert saved["warmup_steps"] == 0.1 and saved["max_steps"] == 2
    if name == "paper-lora":
        assert (out / "adapter" / "adapter_config.json").exists()


# --- item 12: types ---------------------------------------------------------------------------


def test_numbers_in_yaml_exponent_form_are_coerced():
    text = "learning_rate: 5e-3\nweight_decay: 1e-5\nmax_steps: '2'\nuse_peft: 'no'\n"
    loaded = yaml.safe_load(text)
    assert loaded["learning_rate"] == "5e-3"  # the PyYAML behaviour this guards against
    got = coerce_settings({**loaded, "dimension_weights": [1, "2", 1, 1], "epsilon": 1})
    assert got["learning_rate"] == 0.005 and got["weight_decay"] == 1e-5
    assert got["max_steps"] == 2 and got["use_peft"] is False
    assert got["dimension_weights"] == [1.0, 2.0, 1.0, 1.0] and got["epsilon"] == 1


def test_lagdpo_config_built_in_python_coerces_too(tmp_path):
    from lagdpo.config import LagDPOConfig

    cfg = LagDPOConfig(output_dir=str(tmp_path), use_cpu=True, learning_rate="5e-3", beta="0.2")
    assert cfg.learning_rate == 0.005 and cfg.beta == 0.2
    with pytest.raises(ConfigError, match="setting dual_lr='x' must be a number"):
        LagDPOConfig(output_dir=str(tmp_path), use_cpu=True, dual_lr="x")


def test_learning_rate_from_yaml_and_flag_reaches_the_optimizer(tiny_dir, tmp_path):
    config = tmp_path / "cfg.yaml"
    settings = fast_settings(max_steps=1, per_device_train_batch_size=8)
    settings.pop("learning_rate")
    config.write_text(yaml.safe_dump(settings) + "learning_rate: 5e-3\n")
    result = train("multineg-dpo", tiny_dir, make_records(8), tmp_path / "a", config=str(config))
    assert result.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-3)


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--learning-rate", "fast", "setting learning_rate='fast' must be a number"),
        ("--max-steps-per-stage", "1", "unknown setting --max-steps-per-stage"),
        ("--dimension-weights", "1,1,2,2", "setting dimension_weights='1,1,2,2' must be a list"),
        ("--use-peft", "maybe", "setting use_peft='maybe' must be true or false"),
        ("--beta", "0", "beta=0 must be > 0"),
        ("--lr-scheduler-type", "wobbly", "invalid settings: wobbly is not a valid SchedulerType"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(flag, value, expected, tmp_path, capsys):
    args = ["train", "--method", "lagdpo", "--model", str(tmp_path / "m"), "--data", "pk.csv"]
    rc = main([*args, "--output-dir", str(tmp_path / "o"), flag, value])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("lagdpo: error: ") and err.count("\n") == 1, err
    assert expected in err


def test_a_bad_value_in_a_config_file_names_the_key(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("learning_rate: 1e-5\nnum_train_epochs: three\n")
    with pytest.raises(ConfigError, match="num_train_epochs='three' must be a number"):
        train("lagdpo", tmp_path / "no-model", make_records(2), tmp_path / "o", config=str(config))


def test_requirement_lower_bounds_are_the_installed_versions():
    """A range must not admit versions never run: each lower bound is the major.minor installed."""
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    checked = []
    for text in project["dependencies"] + extras["peft"] + extras["dev"]:
        req = Requirement(text)
        try:
            installed = Version(version(req.name))
        except PackageNotFoundError:
            continue
        lower = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert lower, f"{text}: no lower bound"
        assert req.specifier.contains(installed.base_version), f"{text} excludes {installed}"
        assert (lower[0].major, lower[0].minor) == (installed.major, installed.minor), (
            f"{text}: lower bound {lower[0]} but the tests run {installed}"
        )
        checked.append(req.name)
    assert {"torch", "trl", "transformers", "accelerate", "datasets", "peft"} <= set(checked)
