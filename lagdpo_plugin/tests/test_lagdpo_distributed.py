"""Two CPU processes (torchrun, gloo) against one process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from lagdpo_testutils import CPU_RUN_ENV, save_tiny

SCRIPT = Path(__file__).with_name("lagdpo_dist_script.py")


def _env():
    env = dict(os.environ)
    env.update(CPU_RUN_ENV)
    return env


def test_two_processes_hold_identical_lambda_and_match_one_process(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    out = tmp_path / "runs"
    out.mkdir()
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
    ]
    two = subprocess.run(
        torchrun + [str(SCRIPT), str(model_dir), str(out), "8"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert two.returncode == 0, two.stderr[-4000:]
    one = subprocess.run(
        [sys.executable, str(SCRIPT), str(model_dir), str(out), "8"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert one.returncode == 0, one.stderr[-4000:]

    r0 = torch.load(out / "w2-rank0.pt", weights_only=False)
    r1 = torch.load(out / "w2-rank1.pt", weights_only=False)
    single = torch.load(out / "w1-rank0.pt", weights_only=False)
    # every rank holds the same multipliers and history, bit for bit
    assert torch.equal(r0["lambdas"], r1["lambdas"])
    assert r0["history"] == r1["history"]
    assert torch.equal(r0["params"], r1["params"])
    # the multipliers moved (the test exercises the dual update)
    assert r0["lambdas"][3].item() > 0.2
    # and the 2-process run equals the 1-process run with the same global batch
    assert [h["step"] for h in r0["history"]] == [h["step"] for h in single["history"]]
    for a, b in zip(r0["history"], single["history"]):
        assert a["dimension"] == b["dimension"]
        assert abs(a["loss"] - b["loss"]) < 1e-6 and abs(a["lambda"] - b["lambda"]) < 1e-6
    assert torch.allclose(r0["params"], single["params"], atol=1e-6, rtol=0)
    # the model written by rank 0 loads back
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "model-w2")
