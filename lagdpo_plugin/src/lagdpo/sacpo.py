"""SACPO (Wachi et al. 2024), stepwise: align one dimension group after another.

Each stage is Multi-Neg DPO restricted to its group, with the previous stage's model as the frozen
reference (the first stage's reference is the starting model). SACPO's constrained stage uses
β/λ in place of β; ``sacpo_stage_betas`` sets β per stage.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from .data import parse_mask
from .errors import ConfigError

__all__ = ["stage_max_steps", "strip_fused_head", "train_sacpo"]


def strip_fused_head(model) -> None:
    """Undo TRL's per-instance forward patch (`add_fused_lm_head`) so the model is a plain model again.

    Needed before copying a trained model into the next stage's reference: the patch closes over the
    original instance's forward, which a deep copy would keep calling.
    """
    for module in model.modules():
        forward = module.__dict__.get("forward")
        if (
            forward is not None
            and getattr(getattr(forward, "__func__", None), "__name__", "") == "_fused_forward"
        ):
            del module.__dict__["forward"]


STAGE_FINAL = "final"


def stage_max_steps(max_steps: int | None, n_stages: int) -> list[int]:
    """Split a total ``max_steps`` over the stages (5 over 2 stages → 3, 2); -1 = by epochs."""
    if max_steps is None or max_steps <= 0:
        return [-1] * n_stages
    if max_steps < n_stages:
        raise ConfigError(
            f"max_steps={max_steps} is fewer than the {n_stages} SACPO stages; "
            f"give at least {n_stages} (one step per stage)."
        )
    per_stage, extra = divmod(max_steps, n_stages)
    return [per_stage + (1 if i < extra else 0) for i in range(n_stages)]


def _resume_plan(output_dir: Path, n_stages: int, resume) -> tuple[int, str | None]:
    """(first stage to train, checkpoint of that stage or None) for ``resume``.

    Stages whose ``stage-i/final`` model exists are done. ``resume=True`` continues the first
    unfinished stage from its last checkpoint; a path must lie in ``stage-i/``.
    """
    from transformers.trainer_utils import get_last_checkpoint

    done = 0
    while done < n_stages and (output_dir / f"stage-{done + 1}" / STAGE_FINAL).is_dir():
        done += 1
    if resume is True:
        if done == 0 and not (output_dir / "stage-1").is_dir():
            raise ConfigError(
                f"--resume: no SACPO stage in {str(output_dir)!r} to resume from; run without --resume."
            )
        stage_dir = output_dir / f"stage-{done + 1}"
        last = get_last_checkpoint(str(stage_dir)) if stage_dir.is_dir() else None
        return done, last
    path = Path(resume)
    stage_name = path.parent.name
    if (
        not path.is_dir()
        or not stage_name.startswith("stage-")
        or path.parent.parent.resolve() != output_dir.resolve()
    ):
        raise ConfigError(
            f"--resume {str(resume)!r}: a SACPO checkpoint lies in {output_dir!s}/stage-N/; "
            "or give --resume without a path."
        )
    stage = int(stage_name.removeprefix("stage-")) - 1
    if stage > done:
        raise ConfigError(f"--resume {str(resume)!r}: stage {done + 1} has not finished yet.")
    return stage, str(path)


def train_sacpo(
    model,
    tokenizer,
    dataset,
    settings: dict[str, Any],
    *,
    peft_config=None,
    callbacks=None,
    resume_from_checkpoint=None,
):
    """Run the stages; returns the final model and the trainers of the stages run now.

    ``max_steps`` is the total over all stages. Each stage writes its checkpoints to
    ``output_dir/stage-i/`` and its finished model to ``output_dir/stage-i/final``; with
    ``resume_from_checkpoint`` finished stages are loaded rather than trained again.
    """
    from .config import build_config
    from .trainer import MultiNegDPOTrainer

    base = build_config({**settings, "method": "sacpo"})
    stages = [
        parse_mask(stage, where=f"sacpo_stages[{i}]") for i, stage in enumerate(base.sacpo_stages)
    ]
    betas = base.sacpo_stage_betas or [base.beta] * len(stages)
    if len(betas) != len(stages):
        raise ConfigError(
            f"sacpo_stage_betas has {len(betas)} values for {len(stages)} stages; give one per stage."
        )
    steps = stage_max_steps(base.max_steps, len(stages))
    output_dir = Path(settings["output_dir"])
    first, checkpoint = 0, None
    if resume_from_checkpoint not in (None, False):
        first, checkpoint = _resume_plan(output_dir, len(stages), resume_from_checkpoint)
        if first > 0:
            model = _load_stage_model(output_dir / f"stage-{first}" / STAGE_FINAL, model)
    trainers = []
    for i in range(first, len(stages)):
        stage_dir = output_dir / f"stage-{i + 1}"
        stage_settings = {
            **settings,
            "method": "sacpo",
            "active_dimensions": stages[i],
            "beta": float(betas[i]),
            "output_dir": str(stage_dir),
            "max_steps": steps[i],
        }
        ref_model = None
        if peft_config is None and i == first:
            # the first stage's policy is not sharded yet: its copy is the reference. Later
            # stages load the previous stage from disk, and TRL loads their reference from the
            # same path (partitioned at load under ZeRO-3): a copy of a sharded model is shards
            strip_fused_head(model)
            ref_model = copy.deepcopy(model).eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
        trainer = MultiNegDPOTrainer(
            model=model,
            ref_model=ref_model,
            args=build_config(stage_settings),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=checkpoint if i == first else None)
        trainers.append(trainer)
        model = _finish_stage(trainer, stage_dir / STAGE_FINAL, peft_config is not None,
                              last=i + 1 == len(stages))
    return model, trainers


def _finish_stage(trainer, final: Path, is_peft: bool, last: bool):
    """Write the stage's model to ``final``; return the next stage's policy (the last stage:
    the trainer's model, saved again by the caller the same way).

    Without PEFT the trainer saves it (gathered under ZeRO-3 and FSDP, written once) and the
    next stage starts from that file. With PEFT the adapter is merged into the base model.
    """
    acc = trainer.accelerator
    if not is_peft:
        trainer.save_model(str(final))
        acc.wait_for_everyone()
        if last:
            return trainer.model
        return _load_stage_model(final, acc.unwrap_model(trainer.model))
    model = acc.unwrap_model(trainer.model).merge_and_unload()
    strip_fused_head(model)
    if acc.is_main_process:
        model.save_pretrained(str(final))
    acc.wait_for_everyone()
    return model


def _load_stage_model(path: Path, like):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=like.dtype)
