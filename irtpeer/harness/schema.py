"""Typed settings of the harness, checked before anything runs (pydantic v2).

One schema serves every entry point: an endpoint built from command-line options, from a config
file or from a dict in Python (:class:`EndpointSpec`); sampling settings (:class:`SamplingSpec`);
the two sections of ``irtpeer run CONFIG`` (:class:`RunConfig`). A value of the wrong type or out of
range is a :class:`ConfigError` of one line that names the key (``judge.judges[0].concurrency``),
the value and the rule. Numbers written as strings (``"0.5"``, YAML's ``5e-3``) are read as
numbers; ``"lots"`` is an error.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

__all__ = [
    "AnswerSection",
    "EndpointSpec",
    "JudgeSection",
    "RunConfig",
    "SamplingSpec",
    "format_validation_error",
    "validate",
]

_TRANSFORMERS_ENGINE_KEYS = ("device", "dtype", "trust_remote_code")


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


class SamplingSpec(_Settings):
    """Sampling settings; a field left out takes the stage's default."""

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


class EndpointSpec(_Settings):
    """One evaluated model or judge (see :mod:`irtpeer.harness.endpoints`)."""

    backend: Literal["openai", "vllm", "transformers"] = "openai"
    model: str = Field(min_length=1)
    label: str | None = Field(None, min_length=1)
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1)
    concurrency: int = Field(8, ge=1)
    timeout: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    structured: bool = True
    extra_body: dict[str, Any] | None = None
    price_input_per_mtok: float | None = Field(None, ge=0)
    price_output_per_mtok: float | None = Field(None, ge=0)
    engine: dict[str, Any] | None = None
    batch_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> EndpointSpec:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend openai needs `base_url` (--base-url)")
        if (self.price_input_per_mtok is None) != (self.price_output_per_mtok is None):
            raise ValueError(
                "give both `price_input_per_mtok` and `price_output_per_mtok` "
                "(--price-input and --price-output), or neither"
            )
        if self.backend == "transformers" and self.engine:
            bad = sorted(set(self.engine) - set(_TRANSFORMERS_ENGINE_KEYS))
            if bad:
                raise ValueError(
                    f"`engine` key(s) {bad} are not settings of the transformers backend; "
                    f"use {', '.join(_TRANSFORMERS_ENGINE_KEYS)}"
                )
        return self


class AnswerSection(_Settings):
    questions: str = Field(min_length=1)
    out: str = Field(min_length=1)
    system: str | None = None
    sampling: SamplingSpec | None = None
    models: list[EndpointSpec] = Field(min_length=1)
    store: str | None = None
    manifest: str | None = None


class JudgeSection(_Settings):
    answers: str | None = None
    rubric: str = Field("persona", min_length=1)
    out: str = Field(min_length=1)
    replicates: int = Field(1, ge=1)
    reask: bool = True
    sampling: SamplingSpec | None = None
    judges: list[EndpointSpec] = Field(min_length=1)
    store: str | None = None
    manifest: str | None = None


class RunConfig(_Settings):
    answer: AnswerSection | None = None
    judge: JudgeSection | None = None

    @model_validator(mode="after")
    def _sections(self) -> RunConfig:
        if self.answer is None and self.judge is None:
            raise ValueError("needs an [answer] and/or a [judge] section")
        if self.answer is None and self.judge is not None and not self.judge.answers:
            raise ValueError("`judge.answers` is needed when there is no [answer] section")
        return self


# ---- one-line errors ------------------------------------------------------------------------------
def _loc(loc: tuple) -> str:
    s = ""
    for part in loc:
        s += f"[{part}]" if isinstance(part, int) else (f".{part}" if s else str(part))
    return s


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _known_keys(cls: type[BaseModel], loc: tuple) -> list[str] | None:
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part)
        sub = _model_in(field.annotation) if field is not None else None
        if sub is None:
            return None
        cls = sub
    return sorted(cls.model_fields)


def _describe(err: dict, cls: type[BaseModel], flags: Mapping[str, str]) -> str:
    loc = tuple(err.get("loc", ()))
    key = _loc(loc)
    kind = err.get("type", "")
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    flag = flags.get(str(loc[-1])) if loc else None
    hint = f" ({flag})" if flag else ""
    if kind == "missing":
        return f"`{key}` is missing{hint}"
    if kind == "extra_forbidden":
        known = _known_keys(cls, loc[:-1])
        return f"unknown key `{key}`" + (f"; known: {', '.join(known)}" if known else "")
    if not loc or kind == "value_error":
        return (f"{key}: " if key else "") + msg
    return f"`{key}` = {err.get('input')!r}: {msg}{hint}"


def format_validation_error(
    exc: ValidationError,
    cls: type[BaseModel],
    prefix: str,
    flags: Mapping[str, str] | None = None,
    limit: int = 3,
) -> str:
    """One line: ``prefix: `key` = value: rule; ...`` (at most ``limit`` errors)."""
    errs = exc.errors(include_url=False)
    parts = [_describe(e, cls, flags or {}) for e in errs[:limit]]
    more = f" (and {len(errs) - limit} more)" if len(errs) > limit else ""
    return f"{prefix}: " + "; ".join(p.replace("\n", " ") for p in parts) + more


_M = typing.TypeVar("_M", bound=BaseModel)


def validate(cls: type[_M], data: Any, prefix: str, flags: Mapping[str, str] | None = None) -> _M:
    """``cls`` built from ``data``, or a one-line :class:`ConfigError` starting with ``prefix``."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls, prefix, flags)) from None
