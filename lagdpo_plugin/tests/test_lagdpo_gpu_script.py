"""scripts/gpu_lagdpo.py without a GPU: its refusal, arguments, plan, judgement and report.

The GPU runs themselves happen on a GPU machine (scripts/gpu_check.sh); here the whole path
(fixtures → accelerate launch → worker → report) runs on the CPU for the single-gpu config.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_lagdpo.py"
LN2_F32 = float(torch.tensor(math.log(2), dtype=torch.float32))


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_lagdpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(*argv, **env):
    full = {**os.environ, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run([sys.executable, str(SCRIPT), *argv], env=full, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path):
    proc = _script("--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("gpu_lagdpo: no CUDA device") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--configs", "zero4"], "--configs: unknown zero4; use zero3,fsdp,zero2,ddp-lora"),
        (["--steps", "1"], "--steps 1: need at least 2"),
        ([], "--out DIR is required"),
    ],
)
def test_bad_arguments_are_one_usage_error(gpu, argv, message, tmp_path, capsys):
    out = [] if not argv else ["--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exc:
        gpu.parse_args([*out, *argv])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_missing_packages_are_recorded_as_skips(gpu):
    absent = {"deepspeed"}
    entries = gpu.plan(list(gpu.CONFIGS), find_spec=lambda m: None if m in absent else object())
    skips = {e["config"]: e["skip"] for e in entries}
    assert skips == {
        "zero3": "skipped: deepspeed not installed",
        "fsdp": None,
        "zero2": "skipped: deepspeed not installed",
        "ddp-lora": None,
        "single-gpu": None,
    }
    absent.add("peft")
    entries = gpu.plan(["ddp-lora"], find_spec=lambda m: None if m in absent else object())
    assert entries[0]["skip"] == "skipped: peft not installed"


def test_judge_asserts_ln2_and_zero3_partitioning(gpu):
    ln2 = {d: math.log(2) for d in "ATEC"}
    assert gpu.judge("fsdp", "lagdpo", {"first_step_losses": ln2}) == "pass"
    off = {**ln2, "T": 0.70}
    assert gpu.judge("fsdp", "lagdpo", {"first_step_losses": off}).startswith(
        "fail: step-1 loss_T = 0.700000, not ln 2"
    )
    assert gpu.judge("fsdp", "lagdpo-precompute", {"first_step_losses": {**ln2, "A": 0.70}}) == (
        "pass"  # precomputed in other batch shapes: 2e-2 allowed
    )
    assert gpu.judge("zero2", "lagdpo", {"first_step_losses": {**ln2, "C": math.nan}}).startswith(
        "fail: step-1 loss_C = nan"
    )
    assert gpu.judge("zero2", "lagdpo", {"first_step_losses": {"A": 0.69}}).startswith(
        "fail: step-1 losses logged for ['A']"
    )
    record = {"first_step_losses": ln2, "policy_partitioned": True, "reference_partitioned": False}
    assert gpu.judge("zero3", "lagdpo", record) == (
        "fail: the reference's weights were not partitioned by ZeRO-3"
    )
    assert gpu.judge("zero3", "lagdpo", {"error": "RuntimeError: x"}) == "fail: RuntimeError: x"


def test_cpu_self_test_runs_the_whole_path_and_writes_the_report(gpu, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # as on a GPU machine without it
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rc = gpu.main(
        ["--out", str(tmp_path), "--cpu", "--configs", "single-gpu,zero3", "--steps", "2"]
    )
    report = json.loads((tmp_path / "gpu_lagdpo.json").read_text())
    assert rc == 0 and report["passed"] is True
    rows = {(r["config"], r["run"]): r for r in report["runs"]}
    run = rows[("single-gpu", "lagdpo")]
    assert run["status"] == "pass", run
    assert run["first_step_losses"] == {d: LN2_F32 for d in "ATEC"}
    assert run["s_per_step"] > 0 and run["peak_gpu_gib"] is None  # no GPU memory on the CPU
    for name in ("lagdpo", "lagdpo-precompute", "modpo"):
        assert rows[("zero3", name)]["status"] == "skipped: deepspeed not installed"
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["gpu_lagdpo.json"]
