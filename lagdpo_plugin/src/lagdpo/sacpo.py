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

__all__ = ["strip_fused_head", "train_sacpo"]


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


def train_sacpo(
    model, tokenizer, dataset, settings: dict[str, Any], *, peft_config=None, callbacks=None
):
    """Run the stages; returns the final model and the list of stage trainers."""
    from .config import build_config
    from .trainer import MultiNegDPOTrainer

    base = build_config({**settings, "method": "sacpo"})
    stages = [
        parse_mask(stage, where=f"sacpo_stages[{i}]") for i, stage in enumerate(base.sacpo_stages)
    ]
    betas = base.sacpo_stage_betas or [base.beta] * len(stages)
    if len(betas) != len(stages):
        raise ValueError(f"sacpo_stage_betas has {len(betas)} values for {len(stages)} stages.")
    max_steps = int(settings.get("max_steps", -1) or -1)
    trainers = []
    for i, (dims, beta) in enumerate(zip(stages, betas)):
        stage_settings = {
            **settings,
            "method": "sacpo",
            "active_dimensions": dims,
            "beta": float(beta),
            "output_dir": str(Path(settings["output_dir"]) / f"stage-{i + 1}"),
        }
        if max_steps > 0:
            stage_settings["max_steps"] = max(1, max_steps // len(stages))
        ref_model = None
        if peft_config is None:
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
        trainer.train()
        model = trainer.accelerator.unwrap_model(trainer.model)
        if peft_config is not None:
            model = model.merge_and_unload()
        strip_fused_head(model)
        trainers.append(trainer)
    return model, trainers
