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
    batch_size = 8                # batched backends (vllm, transformers)

The settings are validated by :class:`irtpeer.harness.schema.EndpointSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .backend import Backend, RetryPolicy
from .errors import ConfigError
from .schema import EndpointSpec, validate

__all__ = ["CLI_FLAGS", "endpoint_spec", "make_backend", "make_backends"]

#: The command-line option of each endpoint setting, named in error messages.
CLI_FLAGS = {
    "base_url": "--base-url",
    "api_key_env": "--api-key-env",
    "concurrency": "--concurrency",
    "timeout": "--timeout",
    "max_retries": "--max-retries",
    "backoff_base": "--backoff-base",
    "structured": "--no-structured",
    "price_input_per_mtok": "--price-input",
    "price_output_per_mtok": "--price-output",
    "label": "--label",
}


def endpoint_spec(spec: Mapping[str, Any] | EndpointSpec, where: str | None = None) -> EndpointSpec:
    """Validate one endpoint's settings; errors are one line naming the key (and its option)."""
    if isinstance(spec, EndpointSpec):
        return spec
    spec = dict(spec)
    prefix = where or f"endpoint {spec.get('label') or spec.get('model')!r}"
    return validate(EndpointSpec, spec, prefix, CLI_FLAGS)


def make_backend(spec: Mapping[str, Any] | EndpointSpec) -> Backend:
    s = endpoint_spec(spec)
    if s.backend == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(
            s.base_url,
            s.model,
            api_key_env=s.api_key_env,
            concurrency=s.concurrency,
            timeout=s.timeout,
            retry=RetryPolicy(
                max_retries=s.max_retries, base_delay=s.backoff_base, max_delay=s.backoff_max
            ),
            structured=s.structured,
            extra_body=s.extra_body,
            price_input_per_mtok=s.price_input_per_mtok,
            price_output_per_mtok=s.price_output_per_mtok,
        )
    if s.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(
            s.model,
            engine_kwargs=s.engine or {},
            structured=s.structured,
            batch_size=s.batch_size or 1024,
        )
    from .transformers_backend import TransformersBackend

    return TransformersBackend(s.model, batch_size=s.batch_size or 8, **(s.engine or {}))


def make_backends(specs: list[Mapping[str, Any] | EndpointSpec], role: str) -> dict[str, Backend]:
    """Backends keyed by their table label; labels must be unique. Every spec is validated
    before any backend is built."""
    checked = [endpoint_spec(s) for s in specs]
    labels = [s.label or s.model for s in checked]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ConfigError(f"two {role}s are labelled {label!r}; give each a distinct `label`")
    return {label: make_backend(s) for label, s in zip(labels, checked)}
