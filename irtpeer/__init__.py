"""irtpeer: psychometrics-first evaluation of LLMs with LLM judges.

The flow is ``load_ratings`` -> ``ModelSpec`` -> an estimator's ``fit`` -> a :class:`Calibration`::

    import irtpeer
    ratings = irtpeer.load_ratings("ratings.parquet")
    cal = irtpeer.TorchMFRM(irtpeer.ModelSpec(scale="auto")).fit(ratings).calibration_
    print(cal.summary())
    cal.to_csv("results/")
"""

from __future__ import annotations

__version__ = "0.1.0"

import os as _os

# OpenMP threads sleep rather than spin while they wait (set before torch loads its runtime):
# spinning threads made fits 10-25x slower when another process used a core.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._calibration import Calibration
from ._errors import (
    ConvergenceError,
    DesignError,
    IrtpeerError,
    MissingDependencyError,
    RatingsError,
)
from .ratings import Ratings, load_ratings
from .simulate import simulate
from .spec import ModelSpec

__all__ = [
    "Calibration",
    "ConvergenceError",
    "DesignError",
    "IrtpeerError",
    "MissingDependencyError",
    "ModelSpec",
    "Ratings",
    "RatingsError",
    "TorchMFRM",
    "__version__",
    "calibrate",
    "example_path",
    "load_ratings",
    "simulate",
]


def __getattr__(attr: str):
    # estimators are imported on first use, so designs and results need no torch or PyMC
    if attr == "TorchMFRM":
        from .estimators import get_estimator

        return get_estimator("torch")
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def calibrate(ratings, spec: ModelSpec | None = None, *, estimator: str = "torch", **kwargs) -> Calibration:
    """Fit ``ratings`` (a :class:`Ratings`, a path or a DataFrame) and return the Calibration."""
    from .estimators import get_estimator

    if not isinstance(ratings, Ratings):
        ratings = load_ratings(ratings)
    return get_estimator(estimator)(spec, **kwargs).fit(ratings).calibration_


def example_path() -> str:
    """Path of the bundled example ratings (simulated; see ``irtpeer/data/README``)."""
    from importlib.resources import files

    return str(files("irtpeer") / "data" / "example_ratings.parquet")
