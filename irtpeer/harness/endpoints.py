"""Build backends from plain settings (command-line options or a config file section).

An endpoint spec is a mapping::

    backend = "openai"            # openai (default) | vllm | transformers
    model = "Qwen/Qwen3-4B"       # model name at the server, or a local path / hub id
    label = "qwen3-4b"            # name in the tables (model / judge column); default: model
    base_url = "http://127.0.0.1:8000/v1"      # openai only
    api_key_env = "OPENAI_API_KEY"             # openai only: NAME of the variable, never the key
    concurrency = 8; timeout = 120; max_retries = 5; backoff_base = 0.5; backoff_max = 30
    structured = true             # send response_format json_schema for judge calls
    extra_body = { ... }          # extra request fields, e.g. vLLM's chat_template_kwargs
    price_input_per_mtok = 0.15; price_output_per_mtok = 0.60     # USD, for the cost estimate
    engine = { ... }              # vllm: keyword arguments of vllm.LLM; transformers: device, dtype
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .backend import Backend, RetryPolicy
from .errors import ConfigError

__all__ = ["make_backend", "make_backends"]

_KNOWN = {
    "backend",
    "model",
    "label",
    "base_url",
    "api_key_env",
    "concurrency",
    "timeout",
    "max_retries",
    "backoff_base",
    "backoff_max",
    "structured",
    "extra_body",
    "price_input_per_mtok",
    "price_output_per_mtok",
    "engine",
    "batch_size",
}


def make_backend(spec: Mapping[str, Any]) -> Backend:
    spec = dict(spec)
    unknown = set(spec) - _KNOWN
    if unknown:
        raise ConfigError(
            f"endpoint {spec.get('model')!r}: unknown setting(s) {sorted(unknown)}; known: {sorted(_KNOWN)}"
        )
    kind = spec.get("backend", "openai")
    model = spec.get("model")
    if not model:
        raise ConfigError(f"an endpoint lacks `model` (settings given: {sorted(spec)})")
    if kind == "openai":
        if not spec.get("base_url"):
            raise ConfigError(f"endpoint {model!r}: backend openai needs `base_url` (--base-url)")
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(
            spec["base_url"],
            model,
            api_key_env=spec.get("api_key_env", "OPENAI_API_KEY"),
            concurrency=int(spec.get("concurrency", 8)),
            timeout=float(spec.get("timeout", 120.0)),
            retry=RetryPolicy(
                max_retries=int(spec.get("max_retries", 5)),
                base_delay=float(spec.get("backoff_base", 0.5)),
                max_delay=float(spec.get("backoff_max", 30.0)),
            ),
            structured=bool(spec.get("structured", True)),
            extra_body=spec.get("extra_body"),
            price_input_per_mtok=spec.get("price_input_per_mtok"),
            price_output_per_mtok=spec.get("price_output_per_mtok"),
        )
    if kind == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(
            model,
            engine_kwargs=spec.get("engine") or {},
            structured=bool(spec.get("structured", True)),
            batch_size=int(spec.get("batch_size", 1024)),
        )
    if kind == "transformers":
        from .transformers_backend import TransformersBackend

        eng = dict(spec.get("engine") or {})
        return TransformersBackend(model, batch_size=int(spec.get("batch_size", 8)), **eng)
    raise ConfigError(
        f"endpoint {model!r}: unknown backend {kind!r}; use openai, vllm or transformers"
    )


def make_backends(specs: list[Mapping[str, Any]], role: str) -> dict[str, Backend]:
    """Backends keyed by their table label; labels must be unique."""
    out: dict[str, Backend] = {}
    for spec in specs:
        b = make_backend(spec)
        label = str(spec.get("label") or spec["model"])
        if label in out:
            raise ConfigError(f"two {role}s are labelled {label!r}; give each a distinct `label`")
        out[label] = b
    return out
