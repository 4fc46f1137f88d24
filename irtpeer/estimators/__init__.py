"""Estimators of the many-facet Rasch model.

Each takes a :class:`~irtpeer.ModelSpec` and its own options in ``__init__``, does the work in
``fit(ratings)``, returns ``self`` and exposes the result as ``calibration_`` (an estimator-neutral
:class:`~irtpeer.Calibration`). Each class lists in ``OPTIONS`` the keyword options a user may set
from the command line; the CLI passes those and nothing else, and the estimator validates them.

Estimators are imported lazily: building a design or reading a result needs no torch or PyMC.
"""

from __future__ import annotations

import importlib

from .._errors import IrtpeerError

__all__ = ["ESTIMATORS", "TorchMFRM", "estimator_options", "get_estimator"]

#: name -> (module, class); the module is imported only when the estimator is used.
ESTIMATORS: dict[str, tuple[str, str]] = {
    "torch": ("irtpeer.estimators._torch", "TorchMFRM"),
    "bayes": ("irtpeer.estimators._bayes", "BayesMFRM"),
}


def get_estimator(name: str):
    """The estimator class registered under ``name``."""
    try:
        module, cls = ESTIMATORS[name]
    except KeyError:
        raise IrtpeerError(
            f"unknown estimator {name!r}; available: {', '.join(sorted(ESTIMATORS))}"
        ) from None
    return getattr(importlib.import_module(module), cls)


def estimator_options(name: str) -> tuple[str, ...]:
    """The keyword options of estimator ``name`` that a user may set (its ``OPTIONS``)."""
    return tuple(get_estimator(name).OPTIONS)


def __getattr__(attr: str):
    if attr == "TorchMFRM":
        return get_estimator("torch")
    if attr == "DEFAULT_RESPONSE_PENALTY":
        from ._torch import DEFAULT_RESPONSE_PENALTY

        return DEFAULT_RESPONSE_PENALTY
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
