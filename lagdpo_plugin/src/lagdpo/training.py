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

from .config import METHODS, MULTIPLIER_METHODS, SFT_METHODS, build_config, coerce_settings
from .dimensions import DIMENSIONS
from .errors import ConfigError

__all__ = [
    "LAMBDA_HISTORY_FILE",
    "TrainResult",
    "ablate",
    "build_reference",
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
    _agree_mixed_precision(settings)
    if not torch.cuda.is_available():
        settings.setdefault("use_cpu", True)
        settings.setdefault("bf16", False)
    # TRL turns gradient checkpointing on by default; keep it unless the config says otherwise.


def _agree_mixed_precision(settings: dict[str, Any]) -> None:
    """Make the launcher's mixed precision and the training settings' ``bf16`` agree.

    ``accelerate launch`` passes the accelerate config's ``mixed_precision`` as
    ``ACCELERATE_MIXED_PRECISION``; transformers then autocasts to it even when the settings say
    ``bf16: false``, and DeepSpeed reads it for its own bf16 section. Rule: a ``bf16`` (or
    ``fp16``) written in the training settings wins and the environment is set to match; without
    one, the accelerate config decides (``bf16`` there means ``bf16: true``).
    """
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if launched is None:
        return
    from .config import coerce_settings

    explicit = coerce_settings({k: settings[k] for k in ("bf16", "fp16") if k in settings})
    if not explicit:
        settings["bf16"] = launched == "bf16"
        settings["fp16"] = launched == "fp16"
        return
    wanted = "bf16" if explicit.get("bf16") else "fp16" if explicit.get("fp16") else "no"
    if wanted != launched:
        os.environ["ACCELERATE_MIXED_PRECISION"] = wanted


def _accelerate_engine(settings: dict[str, Any]) -> str | None:
    """``"deepspeed"``, ``"fsdp"`` or None, from ``accelerate launch``'s environment or the settings."""
    from accelerate.utils import str_to_bool

    if str_to_bool(os.environ.get("ACCELERATE_USE_DEEPSPEED", "false")) or settings.get(
        "deepspeed"
    ):
        return "deepspeed"
    if str_to_bool(os.environ.get("ACCELERATE_USE_FSDP", "false")) or settings.get("fsdp"):
        return "fsdp"
    return None


def _zero_stage(settings: dict[str, Any]) -> int | None:
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if stage is None and isinstance(settings.get("deepspeed"), dict):
        stage = settings["deepspeed"].get("zero_optimization", {}).get("stage")
    return int(stage) if stage not in (None, "auto") else None


def _check_engine_installed(engine: str | None) -> None:
    import importlib.util

    if engine == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        from .errors import missing_dependency

        raise missing_dependency("deepspeed (the engine of this accelerate config)", "deepspeed")


def _needs_reference_weights(method: str, cfg) -> bool:
    """Whether the run holds a separate reference model (not an adapter switched off)."""
    return method not in SFT_METHODS and not cfg.use_peft


def _fsdp_reference_loading(settings: dict[str, Any]) -> None:
    """Under FSDP with a reference model (no PEFT): load every rank in full, and say so."""
    if settings.get("use_peft") or not _fsdp_full_loading(settings):
        return
    import warnings

    warnings.warn(
        "lagdpo: FSDP RAM-efficient loading turned off: a reference model is loaded beside the "
        "policy, and TRL does not broadcast its weights from rank 0.",
        stacklevel=3,
    )


def _fsdp_full_loading(settings: dict[str, Any]) -> bool:
    """Turn FSDP's RAM-efficient loading off; True if it was on.

    With it on, transformers loads the weights on rank 0 only (meta tensors elsewhere) and relies
    on accelerate's FSDP2 preparation of the *policy* to broadcast them; TRL's `prepare_fsdp` of a
    reference model broadcasts nothing, so ranks above 0 would hold a reference of meta or
    uninitialised weights. Loading every rank in full costs host RAM only until sharding.
    """
    from accelerate.utils import str_to_bool

    was_on = str_to_bool(os.environ.get("FSDP_CPU_RAM_EFFICIENT_LOADING", "false"))
    os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "false"
    fsdp_config = settings.get("fsdp_config")
    if isinstance(fsdp_config, dict):
        for key in ("cpu_ram_efficient_loading", "fsdp_cpu_ram_efficient_loading"):
            if str(fsdp_config.get(key, "false")).lower() == "true":
                settings["fsdp_config"] = {**fsdp_config, key: False}
                was_on = True
    return bool(was_on)


def _is_partitioned(model) -> bool:
    """True once the weights are sharded or placeholders (ZeRO-3 partitions, DTensors, meta)."""
    for p in model.parameters():
        if hasattr(p, "ds_id") or p.is_meta or type(p).__name__ == "DTensor":
            return True
        data = getattr(p, "data", None)
        if data is not None and type(data).__name__ == "DTensor":
            return True
    return False


def build_reference(model, model_arg, *, method: str, cfg, engine: str | None):
    """The frozen reference model to pass to the trainer, built the way TRL 1.16 builds it.

    * No separate reference (None) with PEFT (the adapter is switched off) or when reference
      log-probs are precomputed outside FSDP (TRL computes them from the policy before training).
    * Model given as a path or Hub id: None, so TRL's `DPOTrainer` reloads it from
      ``model.config._name_or_path`` with the policy's dtype — under ZeRO-3 that load is itself
      partitioned by ``zero.Init``, which a copy of an already partitioned policy would not be.
    * Model given in memory: a frozen copy, taken here, before the trainer shards anything; a model
      that is already partitioned cannot be copied and is refused with what to do instead.
    """
    if not _needs_reference_weights(method, cfg):
        return None
    if cfg.precompute_ref_log_probs and engine != "fsdp":
        return None
    if isinstance(model_arg, (str, os.PathLike)):
        return None
    if _is_partitioned(model):
        raise ConfigError(
            "the model object is already partitioned (ZeRO-3, FSDP or meta weights), so a copy "
            "would hold placeholders as the reference: pass the model as a path (the reference "
            "is then reloaded from it), or pass ref_model= explicitly."
        )
    ref_model = copy.deepcopy(model).eval()
    for p in ref_model.parameters():
        p.requires_grad_(False)
    return ref_model


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


def _looks_like_local_path(name: str) -> bool:
    """A Hub id is ``name`` or ``org/name``; anything else (or a path-like start) is a local path."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def _load_pretrained(loader, path: str, what: str, **kwargs):
    try:
        return loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ConfigError(
            f"cannot load the {what} from {path!r}: {first.strip()} "
            "(give a directory written by save_pretrained, or a Hub id with network access)."
        ) from exc


def _load_model_and_tokenizer(model, tokenizer, settings):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model, (str, os.PathLike)):
        path = str(model)
        local = Path(path).expanduser()
        if local.exists():
            path = str(local)
        elif _looks_like_local_path(path):
            raise ConfigError(
                f"model path {path!r} does not exist; give a directory written by save_pretrained "
                "or a Hugging Face Hub id such as Qwen/Qwen3-4B-Instruct-2507."
            )
        kwargs = dict(settings.get("model_init_kwargs") or {})
        kwargs.setdefault("dtype", "float32")
        loaded = _load_pretrained(AutoModelForCausalLM, path, "model", **kwargs)
        if tokenizer is None:
            tokenizer = _load_pretrained(AutoTokenizer, path, "tokenizer")
        return loaded, tokenizer
    if tokenizer is None:
        raise ConfigError("pass `tokenizer=` when `model` is a model object rather than a path.")
    return model, tokenizer


def _resolve_resume(resume, output_dir: Path) -> str | None:
    """The checkpoint to resume from: ``True`` means the last ``checkpoint-N`` in ``output_dir``."""
    if resume is None or resume is False:
        return None
    if resume is True:
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            raise ConfigError(
                f"--resume: no checkpoint-N folder in {str(output_dir)!r} to resume from; "
                "run without --resume, or give --resume PATH."
            )
        return last
    if not Path(resume).is_dir():
        raise ConfigError(f"--resume {str(resume)!r}: no such checkpoint folder.")
    return str(resume)


@dataclass
class _Data:
    train: Any = None
    eval: Any = None
    anchor: Any = None


def _load_data(method: str, cfg, data, eval_data) -> _Data:
    """Read and validate every data set of ``method`` (before any model weights are loaded)."""
    from .data import is_personaknob, load_personaknob, load_sft_data
    from .errors import DataError

    if method == "sft-anchor":
        if cfg.anchor_data is None and is_personaknob(data):
            raise DataError(
                "sft-anchor trains on anchor SFT data only, and --data is PersonaKnob data: "
                "give the anchor data (--anchor-data PATH, or SFT data as --data), or use "
                "--method sft-combined to train on the PersonaKnob golden answers."
            )
        return _Data(anchor=load_sft_data(cfg.anchor_data or data))
    if method == "sft-combined":
        anchor = load_sft_data(cfg.anchor_data) if cfg.anchor_data else None
        return _Data(train=load_sft_data(data), anchor=anchor)
    loaded = _Data(train=load_personaknob(data))
    if eval_data is not None:
        loaded.eval = load_personaknob(eval_data)
    if method == "modpo":
        _check_modpo_margins(cfg, loaded.train)
    return loaded


def _check_modpo_margins(cfg, dataset) -> None:
    if "modpo_rewards" in dataset.column_names:
        return
    if not cfg.modpo_reward_models:
        raise ConfigError(
            "modpo needs margins: add a `modpo_rewards` column to the data, or set "
            "modpo_reward_models ({dim: path of a causal LM}) in the config or with "
            "--modpo-reward-models '{A: PATH, T: PATH}'."
        )
    for dim, path in cfg.modpo_reward_models.items():
        if _looks_like_local_path(str(path)) and not Path(str(path)).expanduser().exists():
            raise ConfigError(f"modpo_reward_models[{dim!r}] = {str(path)!r} does not exist.")


def _prepare_settings(method, config, output_dir, max_steps, ref_model):
    """Settings and config of a run, checked against the launcher (engine, precision, sharding)
    before any data or weights are loaded; returns (settings, config, engine)."""
    if method not in METHODS:
        raise ConfigError(f"method={method!r} is unknown; choose one of {', '.join(METHODS)}.")
    settings = load_settings(config)
    settings.pop("accelerate_config", None)
    settings["method"] = method
    settings["output_dir"] = str(output_dir)
    if max_steps is not None:
        settings["max_steps"] = int(max_steps)
    engine = _accelerate_engine(settings)
    _check_engine_installed(engine)
    _device_defaults(settings)
    settings = coerce_settings(settings)  # "5e-3" read from YAML → 0.005, for every method
    if engine == "fsdp" and ref_model is None and method not in SFT_METHODS:
        _fsdp_reference_loading(settings)
    cfg = build_config(settings)  # validates every key, also for the SFT methods
    if method == "pcgrad-dpo":
        from .trainer import check_pcgrad_sharding

        check_pcgrad_sharding(engine, _zero_stage(settings), cfg.use_peft)
    return settings, cfg, engine


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
    settings, cfg, engine = _prepare_settings(method, config, output_dir, max_steps, ref_model)
    if method != "sacpo":  # SACPO resumes stage by stage (lagdpo.sacpo)
        resume_from_checkpoint = _resolve_resume(resume_from_checkpoint, Path(output_dir))
    loaded = _load_data(method, cfg, data, eval_data)  # before any model weights are loaded
    model_arg = model
    model, tokenizer = _load_model_and_tokenizer(model, tokenizer, settings)
    peft_config = _peft_config(cfg)
    out = Path(output_dir)
    result = TrainResult(output_dir=out, method=method)

    run = {"tokenizer": tokenizer, "data": loaded, "settings": settings, "cfg": cfg,
           "peft_config": peft_config, "callbacks": callbacks, "resume": resume_from_checkpoint}
    if method in SFT_METHODS:
        trainers, final_model = _train_sft(method, model, **run)
    elif method == "sacpo":
        from .sacpo import train_sacpo

        final_model, trainers = train_sacpo(
            model, tokenizer, loaded.train, settings, peft_config=peft_config,
            callbacks=callbacks, resume_from_checkpoint=resume_from_checkpoint,
        )
    else:
        if ref_model is None:
            ref_model = build_reference(model, model_arg, method=method, cfg=cfg, engine=engine)
        trainers, final_model = _train_preference(method, model, ref_model, **run)
        result.history = list(trainers[-1].history)
    result.trainers.extend(trainers)
    trainer = trainers[-1]

    _save(trainer, final_model, tokenizer, out, settings, peft_config is not None)
    if method in MULTIPLIER_METHODS and trainer.accelerator.is_main_process:
        trainer.save_lambda_history(out / LAMBDA_HISTORY_FILE)
    trainer.accelerator.wait_for_everyone()
    return result


def _train_sft(method, model, *, tokenizer, data, settings, cfg, peft_config, callbacks, resume):
    """The SFT baselines: one PersonaSFTTrainer run; returns ([trainer], its model)."""
    from .sft import PersonaSFTTrainer, sft_config_from_settings

    # The plug-in's own defaults (logging every step) hold for the SFT baselines too.
    sft_settings = {k: v for k, v in settings.items() if k != "method"}
    sft_settings.setdefault("logging_steps", cfg.logging_steps)
    trainer = PersonaSFTTrainer(
        model=model,
        args=sft_config_from_settings(sft_settings),
        method=method,
        processing_class=tokenizer,
        persona_dataset=data.train,
        anchor_dataset=data.anchor,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return [trainer], trainer.model


def _train_preference(method, model, ref_model, *, tokenizer, data, settings, cfg,
                      peft_config, callbacks, resume):
    """The DPO-family methods: one run of the method's trainer; returns ([trainer], its model)."""
    from .trainer import TRAINERS

    trainer = TRAINERS[method](
        model=model,
        ref_model=ref_model,
        args=cfg,
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return [trainer], trainer.model


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
        for dim, row in sorted(last.items(), key=lambda item: DIMENSIONS.index(item[0])):
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
