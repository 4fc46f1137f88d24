"""One error family for the plug-in: messages name the argument, the value and what to do."""

from __future__ import annotations


class LagDPOError(Exception):
    """Base class of every error raised on purpose by lagdpo."""


class DataError(LagDPOError, ValueError):
    """A PersonaKnob or SFT file is malformed (which record, which column, what was found)."""


class ConfigError(LagDPOError, ValueError):
    """A setting is unknown or out of range."""


def missing_dependency(package: str, extra: str) -> LagDPOError:
    return LagDPOError(
        f"{package} is not installed; install it with `pip install 'lagdpo-plugin[{extra}]'`."
    )
