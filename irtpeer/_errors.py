"""The one exception family of irtpeer.

Every error a user can cause (bad input, an unidentified design, a fit that does not converge)
is an :class:`IrtpeerError`. Its message names the argument or column, the offending value and
what to do about it. The command-line interface prints these messages without a traceback.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceError",
    "DesignError",
    "IrtpeerError",
    "MissingDependencyError",
    "RatingsError",
]


class IrtpeerError(Exception):
    """Base class of every error irtpeer raises on purpose."""


class RatingsError(IrtpeerError, ValueError):
    """The ratings table is unusable: a missing column, a bad score, duplicated judgments, ..."""


class DesignError(IrtpeerError, ValueError):
    """The design cannot be calibrated as asked: disconnected subsets, confounded facets, ..."""


class ConvergenceError(IrtpeerError, RuntimeError):
    """The estimator stopped before reaching the optimum."""


class MissingDependencyError(IrtpeerError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""


def require(module: str, extra: str):
    """Import an optional dependency, or raise with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError(
            f"this feature needs the optional package {module!r}: "
            f"install it with `pip install 'irtpeer[{extra}]'`"
        ) from exc
