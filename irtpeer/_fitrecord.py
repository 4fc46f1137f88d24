"""The estimator-neutral record of one dimension's fit.

Every estimator (the exact torch one, the Bayesian PyMC one, ...) fills one :class:`DimensionFit`
per dimension; :class:`~irtpeer.Calibration` assembles them and knows nothing else about the
estimator. The arrows point down: designs -> estimators -> this record -> the Calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._design import DimensionDesign

__all__ = ["MEASURE_COLUMNS", "DimensionFit"]

#: The leading columns of every measures table, in this order (estimators may append more,
#: e.g. the Bayesian estimator's highest-density interval).
MEASURE_COLUMNS = [
    "dimension", "facet", "element", "measure", "se", "se_model", "count", "total",
    "observed_average", "status",
]


@dataclass
class DimensionFit:
    """Everything one dimension's fit produced.

    Attributes
    ----------
    design
        The coded design that was fitted.
    measures
        One row per element (and threshold): :data:`MEASURE_COLUMNS` first, extra columns after.
    model_measure
        Per model: its measure (response modes: the mean of its responses' measures).
    model_cov
        Covariance of ``model_measure`` (models x models).
    diagnostics
        One row of the convergence / diagnostics table (``dimension`` and ``converged`` at least).
    identification
        The constraints that fix the scale, in words.
    notes
        What the fit decided on the user's behalf.
    model_draws
        Posterior (or bootstrap) draws of ``model_measure`` as an array (draws x models), when the
        estimator has them; ``None`` for a point estimator.
    """

    design: DimensionDesign
    measures: pd.DataFrame
    model_measure: np.ndarray
    model_cov: np.ndarray
    diagnostics: dict
    identification: str
    notes: list[str] = field(default_factory=list)
    model_draws: np.ndarray | None = None

    @property
    def dimension(self) -> str:
        return self.design.dimension

    @property
    def models(self) -> list[str]:
        return [str(m) for m in self.design.model_labels]
