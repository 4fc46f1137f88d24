"""`LagDPOConfig`: TRL's `DPOConfig` plus the settings of Lag-DPO and its baselines.

Defaults for the dual variables (DESIGN.md §6). The paper's numeric ε and η_λ were lost. The DPO
loss of a dimension starts at log 2 ≈ 0.693 (policy = reference) and falls as the dimension is
learnt; the tolerance ε = 0.5 (the single value a secondary summary reports) therefore starts every
dimension in violation by ≈ 0.19. The multiplier moves by η_λ (L_k − ε) per optimizer step. One
epoch of PersonaKnob (1,331 records) at the paper's batch size 16 is ≈ 84 optimizer steps, so with
η_λ = 0.05 a dimension that stays 0.1–0.2 above ε gains 0.4–0.8 in λ within the epoch — of the
order of the uniform weight 1/K = 0.25 it competes with — while one that meets its tolerance is
driven back to 0 within a few dozen steps. "An order below the primal rate" read literally
(η_λ ≈ 1e-7 beside a primal 1e-6) would move λ by ~1e-5 per epoch: λ frozen, Lag-DPO = Multi-Neg
DPO. The ablation grid of §6.3 is ``lagdpo ablate --epsilons … --dual-lrs …``.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field, fields
from typing import Any

from trl import DPOConfig

from .dimensions import DIMENSIONS
from .errors import ConfigError

__all__ = ["DPO_METHODS", "METHODS", "MULTIPLIER_METHODS", "SFT_METHODS", "LagDPOConfig"]

DPO_METHODS = ("multineg-dpo", "pcgrad-dpo", "sacpo", "safe-rlhf", "modpo", "lagdpo")
SFT_METHODS = ("sft-anchor", "sft-combined")
METHODS = SFT_METHODS + DPO_METHODS
MULTIPLIER_METHODS = ("lagdpo", "safe-rlhf")


@dataclass
class LagDPOConfig(DPOConfig):
    """Settings of every method in the plug-in; DPO-family trainers read it directly, the SFT
    baselines take the fields that `trl.SFTConfig` shares with it."""

    method: str = field(
        default="lagdpo",
        metadata={"help": f"Training method, one of {', '.join(METHODS)}."},
    )
    # --- Lag-DPO --------------------------------------------------------------------------
    epsilon: float = field(
        default=0.5,
        metadata={
            "help": "Tolerance ε: the constraint is L_k ≤ ε for every dimension k (DPO loss units; "
            "log 2 ≈ 0.693 at the start). Per-dimension values go in `dimension_epsilons`."
        },
    )
    dimension_epsilons: dict[str, float] | None = field(
        default=None,
        metadata={
            "help": "Optional per-dimension tolerances, e.g. {'A': 0.4, 'C': 0.6}; missing ones use `epsilon`."
        },
    )
    dual_lr: float = field(
        default=0.05,
        metadata={
            "help": "Dual rate η_λ: after each optimizer step λ_k ← clip(λ_k + η_λ (L_k − ε_k), 0, λ_max). "
            "Chosen so that λ responds within one epoch of PersonaKnob (see lagdpo.config docstring)."
        },
    )
    lambda_init: float = field(
        default=0.0, metadata={"help": "Initial value of every multiplier λ_k."}
    )
    lambda_max: float = field(
        default=10.0, metadata={"help": "Upper clip of the multipliers (λ_k ∈ [0, λ_max])."}
    )
    dimension_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Weights of A, T, E, C in the mean of the per-dimension losses (normalised to sum to 1); "
            "uniform if unset. Also MODPO's objective weights."
        },
    )
    active_dimensions: list[str] | None = field(
        default=None,
        metadata={
            "help": "Train on these dimensions only (others are masked out); all four if unset."
        },
    )
    # --- data -----------------------------------------------------------------------------
    use_chat_template: bool | None = field(
        default=None,
        metadata={
            "help": "Render prompt/completions with the tokenizer's chat template; default: if it has one."
        },
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "Optional system turn before every prompt."}
    )
    # --- PCGrad ---------------------------------------------------------------------------
    pcgrad_reduction: str = field(
        default="mean",
        metadata={"help": "Combine projected gradients by 'mean' (like Multi-Neg DPO) or 'sum'."},
    )
    pcgrad_shuffle: bool = field(
        default=True,
        metadata={"help": "Visit the other dimensions in a random order per step, as in PCGrad."},
    )
    # --- SACPO ----------------------------------------------------------------------------
    sacpo_stages: list[str] = field(
        default_factory=lambda: ["E,C", "A,T"],
        metadata={
            "help": "Dimension groups aligned one after another; each stage's reference is the previous "
            "stage's model. Default: Peer (E, C) then Dignity (A, T)."
        },
    )
    sacpo_stage_betas: list[float] | None = field(
        default=None,
        metadata={
            "help": "β of each stage (SACPO's β/λ for a constrained stage); `beta` for all if unset."
        },
    )
    # --- Safe-RLHF ------------------------------------------------------------------------
    safe_rlhf_threshold: float = field(
        default=0.5, metadata={"help": "Constraint threshold d: Dignity loss mean(L_A, L_T) ≤ d."}
    )
    safe_rlhf_lambda_init: float = field(
        default=1.0, metadata={"help": "Initial multiplier of the Dignity constraint."}
    )
    safe_rlhf_lambda_lr: float = field(
        default=0.05, metadata={"help": "Step size of the multiplier update."}
    )
    safe_rlhf_log_lambda: bool = field(
        default=True,
        metadata={
            "help": "Store log λ and update it by SGD (Safe-RLHF); else projected ascent on λ."
        },
    )
    safe_rlhf_cost_momentum: float = field(
        default=0.9,
        metadata={"help": "Moving-average momentum of the constraint cost fed to the multiplier."},
    )
    # --- MODPO ----------------------------------------------------------------------------
    modpo_reward_models: dict[str, str] | None = field(
        default=None,
        metadata={
            "help": "Per-dimension margin reward models {dim: path}: causal LMs (e.g. DPO-trained on that "
            "dimension) whose implicit reward β·log π_j/π_ref scores each completion. Alternatively give "
            "a `modpo_rewards` column in the data."
        },
    )
    # --- PEFT -----------------------------------------------------------------------------
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter (needs `peft`)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules to adapt; default: all linear layers but the LM head."},
    )
    anchor_data: str | None = field(
        default=None,
        metadata={
            "help": "SFT anchor data (prompt/completion or chat) for sft-anchor / sft-combined."
        },
    )
    # TRL's default of 10 hides the per-step λ trajectory; log every step.
    logging_steps: float = field(default=1, metadata={"help": "Log every N optimizer steps."})

    def __post_init__(self):
        # The same type coercion as build_config, for LagDPOConfig(...) built in Python.
        hints = _field_types()
        for f in fields(self):
            if f.init:
                value = getattr(self, f.name)
                coerced = _coerce_setting(f.name, value, hints)
                if coerced is not value:
                    setattr(self, f.name, coerced)
        super().__post_init__()
        if self.method not in METHODS:
            raise ConfigError(
                f"method={self.method!r} is unknown; choose one of {', '.join(METHODS)}."
            )
        for name in ("dual_lr", "epsilon", "learning_rate"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be ≥ 0.")
        if self.beta <= 0:
            raise ConfigError(f"beta={self.beta} must be > 0 (the DPO temperature, e.g. 0.1).")
        if self.lambda_init < 0 or self.lambda_max < self.lambda_init:
            raise ConfigError(
                f"need 0 ≤ lambda_init ≤ lambda_max, got lambda_init={self.lambda_init}, lambda_max={self.lambda_max}."
            )
        weights = self.dimension_weights
        if weights is not None and (len(weights) != len(DIMENSIONS) or min(weights) < 0):
            raise ConfigError(
                f"dimension_weights={weights} must be {len(DIMENSIONS)} non-negative numbers "
                f"for {', '.join(DIMENSIONS)}."
            )
        for mapping_name in ("dimension_epsilons", "modpo_reward_models"):
            mapping = getattr(self, mapping_name)
            if mapping is not None:
                unknown = set(mapping) - set(DIMENSIONS)
                if unknown:
                    raise ConfigError(
                        f"{mapping_name} has unknown dimensions {sorted(unknown)}; use {list(DIMENSIONS)}."
                    )
        if self.active_dimensions is not None:
            from .data import parse_mask

            self.active_dimensions = parse_mask(self.active_dimensions, where="active_dimensions")
        if self.pcgrad_reduction not in ("mean", "sum"):
            raise ConfigError(
                f"pcgrad_reduction={self.pcgrad_reduction!r} must be 'mean' or 'sum'."
            )

    # Helpers used by the trainers ------------------------------------------------------------
    def epsilons(self) -> list[float]:
        per_dim = self.dimension_epsilons or {}
        return [float(per_dim.get(dim, self.epsilon)) for dim in DIMENSIONS]

    def weights(self) -> list[float]:
        return (
            list(self.dimension_weights)
            if self.dimension_weights is not None
            else [1.0] * len(DIMENSIONS)
        )


def config_field_names() -> set[str]:
    return {f.name for f in fields(LagDPOConfig)}


def build_config(values: dict[str, Any]) -> LagDPOConfig:
    """`LagDPOConfig(**values)` with values coerced to their field types and one-line errors for
    unknown keys, wrong types and values that TRL or transformers reject."""
    known = config_field_names()
    unknown = sorted(set(values) - known)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(
            f"unknown setting(s) {', '.join(hints)}; see `lagdpo train --help-config`."
        )
    values = coerce_settings(values)
    try:
        with warnings.catch_warnings():
            # TRL itself sets `gradient_checkpointing`, which transformers 5 renames: not the user's.
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")
            return LagDPOConfig(**values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # raised by DPOConfig / TrainingArguments checks
        message = " ".join(str(exc).split())
        raise ConfigError(f"invalid settings: {message}") from exc


# --- types --------------------------------------------------------------------------------------
# YAML 1.1 (PyYAML) reads `5e-3` and `1e-5` as strings (a float needs a dot), and so does the CLI,
# which parses each value as YAML. Every value is therefore coerced to the type its field declares.
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@functools.cache
def _field_types() -> dict[str, Any]:
    import typing

    return typing.get_type_hints(LagDPOConfig)


def _union_args(hint: Any) -> tuple[Any, ...]:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _coerce_scalar(value: Any, target: type) -> Any:
    """``value`` as ``target`` (bool, int, float or str), or raise ValueError."""
    if target is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if type(value) is int and value in (0, 1):
            return bool(value)
        raise ValueError
    if isinstance(value, bool):  # True is an int to Python, not to a user
        raise TypeError
    if target is float:
        if isinstance(value, (int, float)):
            return value  # an int is a valid float; keep 500 as 500
        if isinstance(value, str):
            return float(value.strip())
        raise ValueError
    if target is int:
        number = value if isinstance(value, (int, float)) else float(str(value).strip())
        if isinstance(number, int):
            return number
        if float(number).is_integer():
            return int(number)
        raise ValueError
    if target is str and isinstance(value, str):
        return value
    raise ValueError


def _coerce_value(value: Any, hint: Any) -> Any:
    """``value`` coerced to the annotation ``hint``; ValueError if it cannot be."""
    import typing

    options = _union_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise ValueError
    for option in options:  # an exact type match wins (e.g. str in `int | str`)
        if option in _TYPE_NAMES and type(value) is option:
            return value
    for option in options:
        origin = typing.get_origin(option)
        if option in _TYPE_NAMES:
            try:
                return _coerce_scalar(value, option)
            except (ValueError, TypeError):
                continue
        elif origin is list and isinstance(value, (list, tuple)):
            (item,) = typing.get_args(option) or (Any,)
            return [_coerce_value(v, item) if item in _TYPE_NAMES else v for v in value]
        elif origin is dict and isinstance(value, dict):
            _, item = typing.get_args(option) or (Any, Any)
            return {
                k: _coerce_value(v, item) if item in _TYPE_NAMES else v for k, v in value.items()
            }
        elif option in (list, dict) and isinstance(value, option):
            return value
        elif option not in (type(None),) and origin is None and option not in (list, dict):
            return value  # an enum, Literal or object type: TRL/transformers check it
    raise ValueError


def _describe(hint: Any) -> str:
    import typing

    names = []
    for option in _union_args(hint):
        origin = typing.get_origin(option)
        if option in _TYPE_NAMES:
            names.append(_TYPE_NAMES[option])
        elif origin is list or option is list:
            names.append("a list such as [1, 2]")
        elif origin is dict or option is dict:
            names.append("a mapping such as {A: 0.4}")
        elif option is type(None):
            names.append("null")
    return " or ".join(dict.fromkeys(names)) or "a valid value"


def coerce_settings(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every known setting coerced to its field's type (``"5e-3"`` → 0.005);
    a value that cannot be coerced is a one-line `ConfigError` naming the setting."""
    hints = _field_types()
    return {key: _coerce_setting(key, value, hints) for key, value in values.items()}


def _coerce_setting(key: str, value: Any, hints: dict[str, Any]) -> Any:
    if key not in hints:
        return value
    try:
        return _coerce_value(value, hints[key])
    except (ValueError, TypeError):
        raise ConfigError(
            f"setting {key}={value!r} must be {_describe(hints[key])}; "
            f"fix it in the config file or on the command line (--{key.replace('_', '-')})."
        ) from None
