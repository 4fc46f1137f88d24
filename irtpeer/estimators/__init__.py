"""Estimators of the many-facet Rasch model. Each takes a ModelSpec in ``__init__``, does the work
in ``fit(ratings)``, returns ``self`` and exposes the result as ``calibration_``."""

from ._torch import DEFAULT_RESPONSE_PENALTY, TorchMFRM

__all__ = ["DEFAULT_RESPONSE_PENALTY", "TorchMFRM", "get_estimator"]

ESTIMATORS = {"torch": TorchMFRM}


def get_estimator(name: str):
    from .._errors import IrtpeerError

    try:
        return ESTIMATORS[name]
    except KeyError:
        raise IrtpeerError(
            f"unknown estimator {name!r}; available: {', '.join(sorted(ESTIMATORS))}"
        ) from None
