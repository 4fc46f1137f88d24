"""Errors of the judge harness, and the one place that scrubs secrets from text.

All are :class:`irtpeer.IrtpeerError` subclasses, so the CLI prints them without a traceback.

* :class:`HarnessError` — base of the family.
* :class:`RubricError` — a rubric file or a template placeholder is unusable.
* :class:`ConfigError` — a bad option, config file or input table.
* :class:`EndpointFatalError` — an endpoint refused the run (401/403, quota exhausted, unknown
  model): every further call would fail the same way, so the run stops; finished calls are kept.
* :class:`CallFailed` — one call failed for good (a 400, or retries exhausted); recorded as a null
  score with its reason, the run goes on. Not raised to the user.
"""

from __future__ import annotations

import re

from .._errors import IrtpeerError

__all__ = [
    "CallFailed",
    "ConfigError",
    "EndpointFatalError",
    "HarnessError",
    "RubricError",
    "redact",
]


class HarnessError(IrtpeerError):
    """Base class of harness errors."""


class RubricError(HarnessError, ValueError):
    """A rubric file is invalid, or a prompt template cannot be filled from the input table."""


class ConfigError(HarnessError, ValueError):
    """A command-line option, config file or input table is invalid."""


class EndpointFatalError(HarnessError, RuntimeError):
    """The endpoint refused the run (authentication, permission, quota, unknown model)."""


class CallFailed(HarnessError):
    """One call failed for good; ``kind`` is a short machine-readable reason (e.g. ``http_400``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


# Secrets registered by backends at start-up (the values of API-key environment variables).
_SECRETS: set[str] = set()
# Shapes of API keys that a server may echo back (possibly partly masked): sk-..., Bearer ...
_KEY_SHAPES = re.compile(r"(sk-[A-Za-z0-9_\-\*\.]{4,}|Bearer\s+\S+)")


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it (and its long fragments) from text."""
    if value:
        _SECRETS.add(value)


def redact(text: object) -> str:
    """``str(text)`` with every registered secret, any 8+-character fragment of one, and anything
    shaped like an API key replaced by ``[redacted]``. Used on every message that leaves a backend."""
    s = str(text)
    for secret in _SECRETS:
        if secret in s:
            s = s.replace(secret, "[redacted]")
        # servers often echo a masked key such as "sk-abc1****wxyz": drop long fragments too
        if len(secret) >= 12:
            for i in range(len(secret) - 7):
                frag = secret[i : i + 8]
                if frag in s:
                    s = s.replace(frag, "[redacted]")
    return _KEY_SHAPES.sub("[redacted]", s)
