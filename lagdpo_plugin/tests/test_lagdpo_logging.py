"""What a run logs per step, and in which dtype it trains (issue 12, items 14, 15 and 17)."""

from __future__ import annotations

import importlib

import pytest
import torch
from lagdpo_testutils import fast_settings, make_records, save_tiny

from lagdpo.training import train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def _steps(trainer):
    return [h for h in trainer.state.log_history if "loss_A" in h or "train_runtime" not in h]


def test_lagdpo_logs_the_lagrangian_its_weighted_loss_and_each_dimension(tiny_dir, tmp_path):
    # 2 micro-batches per optimizer step: the constant −Σ λ ε must be counted once per step.
    settings = fast_settings(
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        lambda_init=0.3,
        epsilon=0.5,
        dual_lr=0.5,
    )
    result = train(
        "lagdpo", tiny_dir, make_records(8), tmp_path / "o", config=settings, max_steps=3
    )
    logs = [h for h in result.trainer.state.log_history if "lagrangian" in h]
    assert [h["step"] for h in logs] == [1, 2, 3]
    lam_before = [0.3] * 4
    for h in logs:
        losses = [h[f"loss_{d}"] for d in "ATEC"]
        weighted = sum(losses) / 4  # uniform weights over the four present dimensions
        penalty = sum(lam * (loss - 0.5) for lam, loss in zip(lam_before, losses))
        assert h["weighted_dpo_loss"] == pytest.approx(weighted, abs=1e-6)
        assert h["lagrangian"] == pytest.approx(weighted + penalty, abs=1e-6)
        # the loss TRL logs is the Lagrangian itself, −Σ λ_k ε_k included
        assert h["loss"] == pytest.approx(h["lagrangian"], abs=1e-4)
        lam_before = [h[f"lambda_{d}"] for d in "ATEC"]
    # at step 1 every L_k = log 2: Lagrangian = log 2 + 4 · 0.3 · (log 2 − 0.5)
    assert logs[0]["lagrangian"] == pytest.approx(0.693147 + 1.2 * 0.193147, abs=1e-5)
    # ... and the λ term makes the Lagrangian differ from the weighted loss by Σ λ (L − ε)
    assert logs[-1]["lagrangian"] != pytest.approx(logs[-1]["weighted_dpo_loss"], abs=1e-3)


@pytest.mark.parametrize("method", ["sft-combined", "sft-anchor"])
def test_sft_methods_log_every_step_by_default(method, tiny_dir, tmp_path):
    settings = fast_settings(per_device_train_batch_size=4)
    del settings["logging_steps"]  # the plug-in's default (every step) must reach SFTConfig
    records = make_records(8)
    if method == "sft-anchor":
        records = [{"prompt": r["prompt"], "completion": r["golden"]} for r in records]
    result = train(method, tiny_dir, records, tmp_path / "o", config=settings, max_steps=2)
    assert result.trainer.args.logging_steps == 1
    logged = [(h["step"], h["loss"]) for h in result.trainer.state.log_history if "loss" in h]
    assert [step for step, _ in logged] == [1, 2]
    assert all(loss > 0 for _, loss in logged)


def test_the_loss_tests_leave_the_default_dtype_alone_and_models_train_in_float32(
    tiny_dir, tmp_path
):
    # Importing the loss tests (as pytest does when it collects them) must not change the dtype
    # that every later test trains in.
    importlib.import_module("test_lagdpo_losses")
    assert torch.get_default_dtype() == torch.float32
    result = train(
        "multineg-dpo",
        tiny_dir,
        make_records(4),
        tmp_path / "o",
        config=fast_settings(),
        max_steps=1,
    )
    assert {p.dtype for p in result.trainer.model.parameters()} == {torch.float32}
