"""Psychometric analyses of a calibration (DESIGN §4).

Every analysis is a function that takes a :class:`~irtpeer.Calibration` (and the
:class:`~irtpeer.Ratings` it was fitted to, where observations are needed) and returns a
DataFrame or a small result object. Expected scores and residuals come from the measures table
and the ratings alone (:mod:`irtpeer.analyses._model`), so every analysis works unchanged on any
estimator's result. Analyses that refit take an estimator instance.
"""

from ._model import response_measures
from .bias import bias_contrasts, bias_interaction
from .categories import category_statistics
from .clustered import ClusteredResult, clustered_se, question_uncertainty
from .equating import EquatingResult, equate_dimensions
from .facets import facet_summary, separation_statistics
from .fit import fit_statistics, wilson_hilferty
from .judges import JudgeCountResult, d_study, judge_count
from .stability import StabilityResult, friedman_test, per_question_scores, posthoc, stability

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
