"""SACPO's step budget, stage checkpoints and resume (issue 12, item 15)."""

from __future__ import annotations

import shutil

import pytest
import torch
from lagdpo_testutils import fast_settings, make_records, save_tiny

from lagdpo.errors import ConfigError
from lagdpo.sacpo import stage_max_steps
from lagdpo.training import train


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def test_max_steps_is_the_total_over_the_stages():
    assert stage_max_steps(5, 2) == [3, 2]
    assert stage_max_steps(4, 2) == [2, 2]
    assert stage_max_steps(None, 2) == [-1, -1]  # epochs decide
    with pytest.raises(ConfigError, match="max_steps=1 is fewer than the 2 SACPO stages"):
        stage_max_steps(1, 2)


def _weights(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def test_sacpo_runs_max_steps_in_total_and_resumes_an_interrupted_stage(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    settings = fast_settings(save_strategy="steps", save_steps=1, per_device_train_batch_size=4)
    out = tmp_path / "run"
    result = train("sacpo", tiny_dir, make_records(8), out, config=settings, max_steps=5)
    assert [t.state.global_step for t in result.trainers] == [3, 2]  # 5 steps, not 2 + 2
    final = _weights(AutoModelForCausalLM.from_pretrained(out))  # the top-level model
    for stage in ("stage-1", "stage-2"):
        assert (out / stage / "final" / "config.json").exists()
    stage1 = _weights(AutoModelForCausalLM.from_pretrained(out / "stage-1" / "final"))
    assert not torch.equal(stage1, final)

    # Interrupt the second stage after its first step, then `--resume` without a path.
    shutil.rmtree(out / "stage-2" / "final")
    shutil.rmtree(out / "stage-2" / "checkpoint-2")
    resumed = train(
        "sacpo",
        tiny_dir,
        make_records(8),
        out,
        config=settings,
        max_steps=5,
        resume_from_checkpoint=True,
    )
    assert len(resumed.trainers) == 1  # stage 1 was loaded, not trained again
    assert resumed.trainer.state.global_step == 2
    again = _weights(AutoModelForCausalLM.from_pretrained(out))
    torch.testing.assert_close(again, final, rtol=0, atol=1e-6)


def test_sacpo_resume_without_any_stage_is_a_clear_error(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="no SACPO stage in .* to resume from"):
        train(
            "sacpo",
            tiny_dir,
            make_records(4),
            tmp_path / "empty",
            config=fast_settings(),
            max_steps=2,
            resume_from_checkpoint=True,
        )


def test_each_later_stage_starts_from_the_saved_stage_and_its_reference_is_that_file(
    tiny_dir, tmp_path
):
    """Stage 2's policy and reference are loaded from stage-1/final (the trainer's gathered
    save), not copied from the trained model in memory, which under ZeRO-3/FSDP holds shards:
    both equal the file, and the stage's first step is at policy = reference (loss ln 2)."""
    import math

    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    result = train("sacpo", tiny_dir, make_records(8), out, config=fast_settings(), max_steps=4)
    first, second = result.trainers
    saved = AutoModelForCausalLM.from_pretrained(out / "stage-1" / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert not torch.equal(_weights(saved), _weights(base))  # stage 1 did train
    torch.testing.assert_close(_weights(second.ref_model), _weights(saved), rtol=0, atol=0)
    assert second.ref_model.config._name_or_path == str(out / "stage-1" / "final")
    step1 = next(h for h in second.state.log_history if any(k.startswith("loss_") for k in h))
    for k, v in step1.items():
        if k.startswith("loss_"):
            assert v == pytest.approx(math.log(2), abs=1e-6), k
