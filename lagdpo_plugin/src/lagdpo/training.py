"""`train()`: one entry point for every method — load, train, write model, tokenizer and λ history.

The CLI (`lagdpo train`) is a thin layer over this function and `load_settings`.
"""

from __future__ import annotations

import copy
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import METHODS, MULTIPLIER_METHODS, SFT_METHODS, build_config
from .errors import ConfigError

__all__ = [
    "LAMBDA_HISTORY_FILE",
    "TrainResult",
    "ablate",
    "load_settings",
    "shipped_config",
    "train",
]

LAMBDA_HISTORY_FILE = "lambda_history.csv"
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainResult:
    output_dir: Path
    method: str
    history: list[dict[str, Any]] = field(default_factory=list)
    trainers: list[Any] = field(default_factory=list)

    @property
    def trainer(self):
        return self.trainers[-1] if self.trainers else None


def shipped_config(name: str) -> Path:
    """Path of a YAML config shipped with the package (``paper``, ``paper-lora``, …)."""
    stem = name.removesuffix(".yaml")
    path = CONFIG_DIR / f"{stem}.yaml"
    if not path.exists():
        available = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(
            f"no shipped training config {name!r}; available: {', '.join(available)}."
        )
    return path


def load_settings(
    config: str | os.PathLike | dict | None = None, overrides: dict[str, Any] | None = None
) -> dict:
    """Settings from a YAML file (path or shipped name) or dict, with ``overrides`` on top."""
    settings: dict[str, Any] = {}
    if isinstance(config, dict):
        settings.update(config)
    elif config is not None:
        path = Path(config)
        if not path.exists():
            path = shipped_config(str(config))
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {str(path)!r} must hold a mapping of settings, got {type(loaded).__name__}."
            )
        settings.update(loaded)
    settings.update(overrides or {})
    return settings


def _device_defaults(settings: dict[str, Any]) -> None:
    import torch

    settings.setdefault("report_to", "none")
    if not torch.cuda.is_available():
        settings.setdefault("use_cpu", True)
        settings.setdefault("bf16", False)
    # TRL turns gradient checkpointing on by default; keep it unless the config says otherwise.


def _peft_config(cfg):
    if not cfg.use_peft:
        return None
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from .errors import missing_dependency

        raise missing_dependency("peft", "peft") from exc
    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_target_modules or "all-linear",
        task_type="CAUSAL_LM",
    )


def _load_model_and_tokenizer(model, tokenizer, settings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model, (str, os.PathLike)):
        path = str(model)
        kwargs = dict(settings.get("model_init_kwargs") or {})
        kwargs.setdefault("dtype", "float32")
        loaded = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path)
        return loaded, tokenizer
    if tokenizer is None:
        raise ConfigError("pass `tokenizer=` when `model` is a model object rather than a path.")
    return model, tokenizer


def train(
    method: str,
    model,
    data,
    output_dir: str | os.PathLike,
    *,
    config: str | os.PathLike | dict | None = None,
    max_steps: int | None = None,
    tokenizer=None,
    ref_model=None,
    eval_data=None,
    resume_from_checkpoint: str | bool | None = None,
    callbacks=None,
) -> TrainResult:
    """Train ``model`` with ``method`` on ``data`` and write the result to ``output_dir``.

    Writes the trained model and tokenizer (loadable with ``transformers``), the settings used
    (``lagdpo_config.yaml``) and, for methods with multipliers, ``lambda_history.csv`` with
    columns step, dimension, loss, lambda.
    """
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")
    settings = load_settings(config)
    settings.pop("accelerate_config", None)
    settings["method"] = method
    settings["output_dir"] = str(output_dir)
    if max_steps is not None:
        settings["max_steps"] = int(max_steps)
    _device_defaults(settings)
    cfg = build_config(settings)  # validates every key, also for the SFT methods
    model, tokenizer = _load_model_and_tokenizer(model, tokenizer, settings)
    peft_config = _peft_config(cfg)
    out = Path(output_dir)
    result = TrainResult(output_dir=out, method=method)

    if method in SFT_METHODS:
        from .sft import PersonaSFTTrainer, sft_config_from_settings

        sft_settings = {k: v for k, v in settings.items() if k != "method"}
        trainer = PersonaSFTTrainer(
            model=model,
            args=sft_config_from_settings(sft_settings),
            method=method,
            processing_class=tokenizer,
            persona_dataset=data if method == "sft-combined" else None,
            anchor_dataset=cfg.anchor_data
            if cfg.anchor_data
            else (data if method == "sft-anchor" else None),
            peft_config=peft_config,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        result.trainers.append(trainer)
        final_model = trainer.model
    elif method == "sacpo":
        from .data import load_personaknob
        from .sacpo import train_sacpo

        final_model, trainers = train_sacpo(
            model,
            tokenizer,
            load_personaknob(data),
            settings,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        result.trainers.extend(trainers)
        trainer = trainers[-1]
    else:
        from .data import load_personaknob
        from .trainer import TRAINERS

        if ref_model is None and peft_config is None and not cfg.precompute_ref_log_probs:
            # TRL would reload the reference from model.config._name_or_path, which fails for an
            # in-memory model; a frozen copy works for both.
            ref_model = copy.deepcopy(model).eval()
            for p in ref_model.parameters():
                p.requires_grad_(False)
        trainer = TRAINERS[method](
            model=model,
            ref_model=ref_model,
            args=cfg,
            train_dataset=load_personaknob(data),
            eval_dataset=load_personaknob(eval_data) if eval_data is not None else None,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        result.trainers.append(trainer)
        result.history = list(trainer.history)
        final_model = trainer.model

    _save(trainer, final_model, tokenizer, out, settings, peft_config is not None)
    if method in MULTIPLIER_METHODS and trainer.accelerator.is_main_process:
        trainer.save_lambda_history(out / LAMBDA_HISTORY_FILE)
    trainer.accelerator.wait_for_everyone()
    return result


def _save(trainer, model, tokenizer, out: Path, settings: dict, is_peft: bool) -> None:
    from .sacpo import strip_fused_head

    out.mkdir(parents=True, exist_ok=True)
    if is_peft and hasattr(trainer.accelerator.unwrap_model(model), "merge_and_unload"):
        trainer.save_model(str(out / "adapter"))
        if (
            trainer.accelerator.is_main_process
            and not trainer.is_deepspeed_enabled
            and not trainer.is_fsdp_enabled
        ):
            merged = copy.deepcopy(trainer.accelerator.unwrap_model(model)).merge_and_unload()
            strip_fused_head(merged)
            merged.save_pretrained(str(out))
    elif model is trainer.model:
        trainer.save_model(str(out))
    elif trainer.accelerator.is_main_process:  # SACPO: the final (already merged) model
        model.save_pretrained(str(out))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(out))
        serialisable = {
            k: v
            for k, v in settings.items()
            if isinstance(v, (str, int, float, bool, list, dict, type(None)))
        }
        (out / "lagdpo_config.yaml").write_text(yaml.safe_dump(serialisable, sort_keys=True))


def ablate(
    model,
    data,
    output_dir: str | os.PathLike,
    *,
    epsilons: list[float],
    dual_lrs: list[float],
    config: str | os.PathLike | dict | None = None,
    max_steps: int | None = None,
    tokenizer=None,
) -> Path:
    """The paper's §6.3 grid: one Lag-DPO run per (ε, η_λ) into ``output_dir/eps{ε}_dual{η}``.

    Writes ``output_dir/ablation_summary.csv`` with the last step's loss and λ per dimension.
    """
    import csv

    base = load_settings(config)
    out = Path(output_dir)
    rows = []
    for eps, dual_lr in itertools.product(epsilons, dual_lrs):
        run_dir = out / f"eps{eps:g}_dual{dual_lr:g}"
        model_arg = model if isinstance(model, (str, os.PathLike)) else copy.deepcopy(model)
        result = train(
            "lagdpo",
            model_arg,
            data,
            run_dir,
            config={**base, "epsilon": eps, "dual_lr": dual_lr},
            max_steps=max_steps,
            tokenizer=tokenizer,
        )
        last: dict[str, dict[str, Any]] = {}
        for row in result.history:
            last[row["dimension"]] = row
        for dim, row in sorted(last.items()):
            rows.append(
                {
                    "epsilon": eps,
                    "dual_lr": dual_lr,
                    "dimension": dim,
                    "step": row["step"],
                    "loss": row["loss"],
                    "lambda": row["lambda"],
                    "run_dir": str(run_dir),
                }
            )
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "ablation_summary.csv"
    with summary.open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["epsilon", "dual_lr", "dimension", "step", "loss", "lambda", "run_dir"]
        )
        writer.writeheader()
        writer.writerows(rows)
    return summary
