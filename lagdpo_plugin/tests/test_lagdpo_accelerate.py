"""lagdpo under the shipped accelerate configs, on CPU (issue 13, items 1-5).

What runs here: ``ddp-lora`` as 2 gloo processes and ``single-gpu`` as 1 process, each in the
environment `accelerate launch --config_file` gives (built by accelerate's launcher code), through
`torch.distributed.run`. ``fsdp``, ``zero2`` and ``zero3`` cannot run on CPU: accelerate 1.15 turns
FSDP and DeepSpeed on only for GPU-type backends (on CPU, ``ACCELERATE_USE_FSDP`` yields a plain
multi-CPU DDP run), so for them the CPU-side logic is tested (reference construction, RAM-efficient
loading, the PCGrad refusal, the missing-engine line); scripts/gpu_lagdpo.py runs them on a GPU.
"""

from __future__ import annotations

import importlib.machinery
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from lagdpo_testutils import accelerate_env, fast_settings, make_records, save_tiny

from lagdpo import training
from lagdpo.cli import main
from lagdpo.errors import ConfigError, LagDPOError
from lagdpo.trainer import check_pcgrad_sharding

SCRIPT = Path(__file__).with_name("lagdpo_accel_script.py")
# -log σ(0) in float32, what a dimension's loss is when policy and reference are the same model
LN2 = float(torch.tensor(math.log(2), dtype=torch.float32))
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(cmd, env, what):
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [SRC, env.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, f"{what}:\n{proc.stderr[-4000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-process run (ddp-lora config) and one 1-process run (single-gpu config)."""
    root = tmp_path_factory.mktemp("accel")
    model, reward = save_tiny(root / "model"), save_tiny(root / "reward", seed=1)
    port = str(29000 + os.getpid() % 400)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two = "ga,plain,resume,nolambda,precompute,modpo,lora"
    args = [str(model), str(reward), str(root)]
    env2 = accelerate_env("ddp-lora", 2)
    _run([*torchrun, "--master-port", port, str(SCRIPT), *args, two], env2, "2 processes")
    _run([sys.executable, str(SCRIPT), *args, "ga,plain"], accelerate_env("single-gpu", 1), "1")
    load = lambda name: torch.load(root / name, weights_only=False)
    return {"r0": load("w2-rank0.pt"), "r1": load("w2-rank1.pt"), "one": load("w1-rank0.pt")}


def _step_losses(result, step):
    return [h["loss"] for h in result["history"] if h["step"] == step]


def _close(h1, h2, tol=1e-6):
    assert [(h["step"], h["dimension"]) for h in h1] == [(h["step"], h["dimension"]) for h in h2]
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) < tol and abs(a["lambda"] - b["lambda"]) < tol


def test_first_step_loss_is_exactly_ln2_on_every_rank(runs):
    for rank in ("r0", "r1", "one"):
        for run in ("ga", "plain") + (("resume", "lora") if rank != "one" else ()):
            losses = _step_losses(runs[rank][run], 1)
            assert len(losses) == 4 and all(v == LN2 for v in losses), (rank, run, losses)
    # full fine-tuning holds a reference model (reloaded from the path), LoRA switches the adapter off
    assert runs["r0"]["ga"]["ref_model"] == "LlamaForCausalLM"
    assert runs["r0"]["lora"]["ref_model"] is None


def test_ranks_agree_and_accumulation_and_world_size_do_not_change_the_run(runs):
    r0, r1, one = runs["r0"], runs["r1"], runs["one"]
    for run in ("ga", "plain", "resume", "lora"):
        assert torch.equal(r0[run]["lambdas"], r1[run]["lambdas"]), run
        assert torch.equal(r0[run]["params"], r1[run]["params"]), run
        assert r0[run]["history"] == r1[run]["history"], run
    assert r0["ga"]["lambdas"][3].item() > 0.2  # λ_C moved: the dual update is exercised
    # 2 ranks × 2 micro-batches × 2 = 2 ranks × 4 = 1 rank × 4 × 2 micro-batches = 1 rank × 8
    for other in (r0["plain"], one["ga"], one["plain"]):
        _close(r0["ga"]["history"], other["history"])
        assert torch.allclose(r0["ga"]["params"], other["params"], atol=1e-6, rtol=0)


def test_resume_restores_lambda_on_every_rank_without_a_shared_file(runs):
    r0, r1 = runs["r0"], runs["r1"]
    step2 = [h["lambda"] for h in r0["ga"]["history"] if h["step"] == 2]
    saved = torch.tensor(step2, dtype=torch.float64)
    # rank 1 resumed from a copy of the checkpoint without lagdpo_state.json
    for rank in (r0, r1):
        assert torch.equal(rank["resume"]["restored"]["lambdas"], saved)
        assert rank["resume"]["restored"]["history_len"] == 8
        # and the resumed run equals the uninterrupted one
        assert rank["resume"]["history"] == r0["ga"]["history"]
        assert torch.equal(rank["resume"]["params"], r0["ga"]["params"])


def test_resume_without_any_lambda_state_fails_loudly_on_every_rank(runs):
    for rank in ("r0", "r1"):
        message = runs[rank]["nolambda"]
        assert message.startswith("cannot resume lagdpo: ") and "\n" not in message
        assert "lagdpo_state.json' is missing" in message


def test_precomputed_reference_is_sharded_across_ranks_and_gathered_in_order(runs):
    p0, p1 = runs["r0"]["precompute"], runs["r1"]["precompute"]
    # 16 records in batches of 2: 8 forwards in all, 4 on each rank (each rank its share only)
    assert p0["forward_calls"] == p1["forward_calls"] == 4
    assert torch.equal(p0["table"], p1["table"]) and p0["table"].shape == (16, 5)
    # every record's row equals scoring all records on one process
    assert torch.allclose(p0["table"], p0["local"], atol=1e-5, rtol=0)


def test_modpo_reward_margins_are_sharded_and_gathered_like_the_reference(runs):
    m0, m1 = runs["r0"]["modpo"], runs["r1"]["modpo"]
    assert torch.equal(m0["rewards"], m1["rewards"])
    e = 2  # reward model for dimension E only; the others contribute no margin
    assert torch.allclose(m0["rewards"][:, :, e], m0["local"], atol=1e-5, rtol=0)
    assert m0["rewards"][:, :, e].abs().max() > 0.01
    assert m0["rewards"][:, :, [0, 1, 3]].abs().max() == 0


# --- the CPU-side logic of fsdp, zero2 and zero3 ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def _cli(tmp_path, tiny_dir, *extra):
    data = tmp_path / "pk.jsonl"
    import json

    data.write_text("\n".join(json.dumps(r) for r in make_records(4)))
    return ["train", "--model", str(tiny_dir), "--data", str(data), "--output-dir",
            str(tmp_path / "o"), *extra]  # fmt: skip


@pytest.mark.parametrize("config", ["zero2", "zero3"])
def test_a_deepspeed_config_without_deepspeed_is_one_line_naming_the_extra(
    config, tmp_path, tiny_dir, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # what `import deepspeed` sees if absent
    argv = _cli(tmp_path, tiny_dir, "--method", "lagdpo", "--accelerate-config", config)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--accelerate-config {config}: deepspeed is not installed" in err
    assert "pip install 'lagdpo-plugin[deepspeed]'" in err
    # the same environment started some other way (accelerate launch by hand)
    for key, value in accelerate_env(config, 2).items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    with pytest.raises(LagDPOError, match=r"pip install 'lagdpo-plugin\[deepspeed\]'"):
        training.train("lagdpo", tiny_dir, make_records(4), tmp_path / "t")


@pytest.mark.parametrize("config", ["fsdp", "zero3"])
def test_pcgrad_on_a_sharding_config_is_refused_once_before_any_process_starts(
    config, tmp_path, tiny_dir, monkeypatch, capsys
):
    def no_launch(*a, **k):
        raise AssertionError("accelerate launch was started")

    monkeypatch.setattr(subprocess, "call", no_launch)
    if config == "zero3":
        fake = types.ModuleType("deepspeed")  # installed, as far as find_spec can tell
        fake.__spec__ = importlib.machinery.ModuleSpec("deepspeed", None)
        monkeypatch.setitem(sys.modules, "deepspeed", fake)
    argv = _cli(tmp_path, tiny_dir, "--method", "pcgrad-dpo", "--accelerate-config", config)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "pcgrad-dpo under" in err and "use_peft: true" in err
    # a LoRA adapter is allowed: the launch goes ahead
    launched = []
    monkeypatch.setattr(subprocess, "call", lambda cmd: launched.append(cmd) or 0)
    assert main([*argv, "--config", "paper-lora"]) == 0
    assert launched and "pcgrad-dpo" in launched[0]


def test_launch_mixed_precision_follows_the_training_settings(tmp_path, tiny_dir, capsys):
    def command(*extra):
        argv = _cli(tmp_path, tiny_dir, "--method", "lagdpo", "--accelerate-config", "fsdp")
        assert main([*argv, "--print-command", *extra]) == 0
        return capsys.readouterr().out

    assert "--mixed_precision bf16 " in command("--config", "paper")  # paper.yaml: bf16 true
    assert "--mixed_precision no " in command("--config", "paper", "--bf16", "false")
    assert "--mixed_precision" not in command()  # unset: the accelerate config decides


def test_train_agrees_with_the_launchers_mixed_precision(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    settings = {}
    training._agree_mixed_precision(settings)
    assert settings == {"bf16": True, "fp16": False}  # no bf16 in the settings: config decides
    settings = {"bf16": "false"}
    training._agree_mixed_precision(settings)
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "no"  # the settings win
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    training._agree_mixed_precision({"bf16": True})
    assert os.environ["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_fsdp_ram_efficient_loading_is_turned_off_only_when_a_reference_is_loaded(
    tmp_path, monkeypatch
):
    """The settings a run under the fsdp config starts from (the run itself needs GPUs)."""
    assert accelerate_env("fsdp", 2)["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"  # shipped
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "true")  # a user's own fsdp config
    lora = fast_settings(use_peft=True)
    _, _, engine = training._prepare_settings("lagdpo", lora, tmp_path, 1, None)
    assert engine == "fsdp" and os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "true"
    with pytest.warns(UserWarning, match="FSDP RAM-efficient loading turned off"):
        training._prepare_settings("lagdpo", fast_settings(), tmp_path, 1, None)
    assert os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] == "false"
    # a TrainingArguments-style fsdp_config in the settings is turned off as well
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    own = fast_settings(fsdp="full_shard", fsdp_config={"cpu_ram_efficient_loading": True})
    with pytest.warns(UserWarning, match="RAM-efficient loading turned off"):
        settings, _, engine = training._prepare_settings("lagdpo", own, tmp_path, 1, None)
    assert engine == "fsdp" and settings["fsdp_config"]["cpu_ram_efficient_loading"] is False


def test_reference_is_built_as_trl_builds_it(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lagdpo.config import build_config

    cfg = build_config(fast_settings(output_dir=str(tmp_path)))
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    kw = {"method": "lagdpo", "cfg": cfg, "engine": None}
    assert training.build_reference(model, str(tiny_dir), **kw) is None  # TRL reloads the path
    ref = training.build_reference(model, model, **kw)  # in memory: a frozen copy, taken now
    assert ref is not model and not any(p.requires_grad for p in ref.parameters())
    assert all(torch.equal(a, b) for a, b in zip(ref.parameters(), model.parameters()))
    pre = build_config(fast_settings(output_dir=str(tmp_path), precompute_ref_log_probs=True))
    assert training.build_reference(model, model, method="lagdpo", cfg=pre, engine=None) is None
    assert training.build_reference(model, model, method="lagdpo", cfg=pre, engine="fsdp")
    next(model.parameters()).ds_id = 0  # how DeepSpeed's zero.Init marks a partitioned weight
    with pytest.raises(ConfigError, match="already partitioned .* pass the model as a path"):
        training.build_reference(model, model, **kw)


def test_pcgrad_is_refused_on_sharded_full_models(tmp_path, tiny_dir, monkeypatch, capsys):
    for engine, stage in (("fsdp", None), ("deepspeed", 3)):
        with pytest.raises(ConfigError, match="pcgrad-dpo under .* train a LoRA adapter"):
            check_pcgrad_sharding(engine, stage, is_peft=False)
        check_pcgrad_sharding(engine, stage, is_peft=True)  # an adapter is small: allowed
    check_pcgrad_sharding("deepspeed", 2, is_peft=False)  # ZeRO-2 keeps parameters whole
    check_pcgrad_sharding(None, None, is_peft=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert main(_cli(tmp_path, tiny_dir, "--method", "pcgrad-dpo")) == 2
    err = capsys.readouterr().err
    assert err.startswith("lagdpo: error: pcgrad-dpo under FSDP") and err.count("\n") == 1
