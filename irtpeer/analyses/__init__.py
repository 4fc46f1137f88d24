"""Psychometric analyses of a calibration (DESIGN §4).

Every analysis is a function that takes a :class:`~irtpeer.Calibration` (and the
:class:`~irtpeer.Ratings` it was fitted to, where observations are needed) and returns a
DataFrame or a small result object. Expected scores and residuals come from the measures table
and the ratings alone (:mod:`irtpeer.analyses._model`), so every analysis works unchanged on any
estimator's result. Analyses that refit take an estimator instance.
"""

import importlib

# imported now: ``stability`` is both a function and its module's name, and the function must
# win whatever imports the module first (a cheap module: scipy.stats is imported on first use)
from .stability import StabilityResult, friedman_test, per_question_scores, posthoc, stability

#: Every other public name and the module that defines it, imported on first use (PEP 562):
#: ``irtpeer score`` needs the facet summary and the fit statistics, not the analyses that
#: import scipy.linalg and scipy.sparse (clustered SEs) or the refits.
_WHERE = {
    "response_measures": "_model",
    "bias_contrasts": "bias",
    "bias_interaction": "bias",
    "category_statistics": "categories",
    "ClusteredResult": "clustered",
    "clustered_se": "clustered",
    "question_uncertainty": "clustered",
    "EquatingResult": "equating",
    "equate_dimensions": "equating",
    "facet_summary": "facets",
    "separation_statistics": "facets",
    "fit_statistics": "fit",
    "wilson_hilferty": "fit",
    "JudgeCountResult": "judges",
    "d_study": "judges",
    "judge_count": "judges",
}
_MODULES = {"_lazy", "_model", "_pvalues", "bias", "categories", "clustered", "equating", "facets",
            "fit", "judges", "refit"}


def __getattr__(name: str):
    if name in _MODULES:  # ``irtpeer.analyses.fit`` without importing it first
        return importlib.import_module(f".{name}", __name__)
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "ClusteredResult",
    "EquatingResult",
    "JudgeCountResult",
    "StabilityResult",
    "bias_contrasts",
    "bias_interaction",
    "category_statistics",
    "clustered_se",
    "d_study",
    "equate_dimensions",
    "facet_summary",
    "fit_statistics",
    "friedman_test",
    "judge_count",
    "per_question_scores",
    "posthoc",
    "question_uncertainty",
    "response_measures",
    "separation_statistics",
    "stability",
    "wilson_hilferty",
]
