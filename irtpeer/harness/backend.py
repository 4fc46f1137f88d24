"""The one interface every generation backend implements, and the retry policy they share.

A backend turns a :class:`ChatRequest` (messages, sampling settings, optional JSON schema) into a
:class:`ChatResult` (text, finish reason, token usage). Two shapes:

* asynchronous, one request at a time (``batched = False``): :meth:`Backend.chat` — the
  OpenAI-compatible client; the runner puts ``concurrency`` workers in front of it;
* batched (``batched = True``): :meth:`Backend.chat_batch` — vLLM's offline engine and local
  transformers generation, which are fastest when given many prompts at once.

:meth:`Backend.identity` is what distinguishes the outputs of two backends (kind, endpoint, model);
it goes into every call key. It never contains a secret.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import CallFailed

__all__ = ["Backend", "ChatRequest", "ChatResult", "RetryPolicy", "Sampling"]


@dataclass(frozen=True)
class Sampling:
    """Sampling settings; all of them go into the call key."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "sampling") -> Sampling:
        """Validated settings (one-line :class:`ConfigError` naming the key); missing keys take
        the defaults above."""
        from .schema import SamplingSpec, validate

        flags = {
            k: "--" + k.replace("_", "-") for k in ("temperature", "top_p", "max_tokens", "seed")
        }
        spec = validate(SamplingSpec, dict(d or {}), where, flags)
        return cls(**spec.model_dump(exclude_none=True))


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs, hashable
    sampling: Sampling = Sampling()
    schema: dict[str, Any] | None = field(default=None, compare=False)
    schema_name: str = "scores"

    @classmethod
    def make(
        cls,
        messages: Sequence[dict[str, str]],
        sampling: Sampling,
        schema=None,
        schema_name="scores",
    ):
        return cls(
            tuple((m["role"], m["content"]) for m in messages), sampling, schema, schema_name
        )

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]


@dataclass
class ChatResult:
    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    retries: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; a server's ``Retry-After`` wins when it is given."""

    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 120.0

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after)
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return (rng or random).uniform(cap / 2, cap)


class Backend:
    """Base class: subclasses set ``kind``, ``model``, ``concurrency`` and implement one of
    :meth:`chat` / :meth:`chat_batch`."""

    kind: str = "base"
    batched: bool = False
    model: str = ""
    concurrency: int = 1
    price_input_per_mtok: float | None = None
    price_output_per_mtok: float | None = None

    def identity(self) -> dict[str, Any]:
        """What distinguishes this backend's outputs: goes into call keys. No secrets."""
        return {"kind": self.kind, "model": self.model}

    def describe(self) -> dict[str, Any]:
        """Settings for the run manifest. No secrets."""
        return self.identity()

    async def chat(self, request: ChatRequest, stats) -> ChatResult:  # pragma: no cover - interface
        raise NotImplementedError

    def chat_batch(
        self, requests: list[ChatRequest], stats
    ) -> list[ChatResult | CallFailed]:  # pragma: no cover
        raise NotImplementedError

    async def aclose(self) -> None:
        return None
