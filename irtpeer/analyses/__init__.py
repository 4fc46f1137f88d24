"""Psychometric analyses of a calibration (DESIGN §4).

Every analysis is a function that takes a :class:`~irtpeer.Calibration` (and the
:class:`~irtpeer.Ratings` it was fitted to, where observations are needed) and returns a
DataFrame or a small result object. Expected scores and residuals come from the measures table
and the ratings alone (:mod:`irtpeer.analyses._model`), so every analysis works unchanged on any
estimator's result. Analyses that refit take an estimator instance.
"""

from .categories import category_statistics
from .facets import facet_summary, separation_statistics
from .fit import fit_statistics, wilson_hilferty

__all__ = [
    "category_statistics",
    "facet_summary",
    "fit_statistics",
    "separation_statistics",
    "wilson_hilferty",
]
