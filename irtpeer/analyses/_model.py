"""The fitted model rebuilt from the measures table and the ratings alone.

A many-facet Rasch model is fully determined by its measures: for an observation of person ``p``
by facet elements ``e_1..e_F`` the linear predictor is ``eta = theta_p - sum_f b_{f,e_f}`` and

    log P(x = k) = k * eta - sum_{j <= k} tau_j - log Z          (tau empty when binary)

So every analysis here computes expected scores, variances and residuals from
``Calibration.measures`` and the ``Ratings`` it was fitted to, whatever estimator produced the
measures (exact torch, Bayesian posterior means, anchored values from elsewhere).

Categories are the observed score values of the dimension (``Calibration.meta["categories"]``),
used as consecutive steps ``0..K`` exactly as the estimators do.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from .._design import _category_index, _distinct_scores
from .._errors import IrtpeerError
from ..ratings import category_codes

__all__ = ["DimensionModel", "anchored_shift", "dimension_models", "model_probabilities"]

#: Name of the person facet in the measures table when each model x question has its own measure.
RESPONSE_FACET = "response"


@dataclass
class DimensionModel:
    """One dimension's observations with everything the fitted model says about them.

    Per observation only compact arrays are held (int32 codes, the category index in the
    scores' small integer type); the linear predictor ``eta`` and the weights ``w`` are formed
    on first use, and :meth:`slices` gives the same numbers for slices of the observations so
    that a pass over 100 M judgments holds a few bytes per judgment.
    """

    dimension: str
    scale: str
    categories: np.ndarray  # observed score values; index = category 0..K
    frame: pd.DataFrame  # the dimension's rows of Ratings.data (original columns)
    facets: list[str]  # model facets as named in the measures table, the person facet first
    columns: list[str]  # the ratings column (or composite key) behind each facet
    codes: list[np.ndarray]  # per facet: element index of each observation (int32)
    elements: list[np.ndarray]  # per facet: element labels (the measures table's order)
    measure: list[np.ndarray]  # per facet: measure of each element
    extreme: list[np.ndarray]  # per facet: True where the element's status is extreme
    x: np.ndarray  # category index 0..K per observation (a small integer type)
    weights: np.ndarray | None  # observation weights; None when every weight is 1
    cum_table: np.ndarray  # cumulative thresholds (1 or pcm elements, K+1), first column 0
    tau_codes: np.ndarray | None  # partial credit: thresholds row of each observation
    pcm_facet: str | None

    @property
    def K(self) -> int:
        return len(self.categories) - 1

    @property
    def n(self) -> int:
        return len(self.x)

    @cached_property
    def w(self) -> np.ndarray:
        """Observation weights (ones when none were given)."""
        return np.ones(self.n) if self.weights is None else self.weights

    @cached_property
    def eta(self) -> np.ndarray:
        """Linear predictor per observation."""
        return self.eta_of(slice(None))

    def eta_of(self, sl: slice) -> np.ndarray:
        """Linear predictor of the observations ``sl``."""
        return self.eta_at([c[sl] for c in self.codes])

    def eta_at(self, codes: list[np.ndarray]) -> np.ndarray:
        """Linear predictor of the observations whose element indices are ``codes`` (one array
        per facet, as in :attr:`codes`; ``intp`` arrays are gathered fastest)."""
        eta = self.measure[0][codes[0]]
        for c, v in zip(codes[1:], self.measure[1:]):
            eta -= v[c]
        return eta

    @property
    def cum(self) -> np.ndarray:
        """Cumulative thresholds: (1, K+1) or, partial credit, (n_obs, K+1)."""
        return self.cum_table if self.tau_codes is None else self.cum_table[self.tau_codes]

    def slices(self, step: int = 1 << 20):
        """Slices of the observations, ``step`` at a time."""
        return (slice(s, min(s + step, self.n)) for s in range(0, self.n, step))

    def touches_extreme_of(self, sl: slice) -> np.ndarray:
        """Observations ``sl`` involving an element with an extreme score."""
        out = np.zeros(len(self.x[sl]), dtype=bool)
        for code, ext in zip(self.codes, self.extreme):
            if ext.any():
                out |= ext[code[sl]]
        return out

    @property
    def touches_extreme(self) -> np.ndarray:
        """Observations involving an element with an extreme score (set aside when fitting)."""
        return self.touches_extreme_of(slice(None))

    def cum_rows(self, obs: np.ndarray | slice | None = None) -> np.ndarray:
        """Cumulative thresholds for the given observations ((K+1,) or (n, K+1))."""
        if self.tau_codes is None:
            return self.cum_table[0]
        return self.cum if obs is None else self.cum_table[self.tau_codes[obs]]

    def moments(self, shift: np.ndarray | float = 0.0, sl: slice | None = None, *,
                probabilities: bool = True, eta: np.ndarray | None = None):
        """Category probabilities, expected score, variance and 4th central moment of every
        observation (or of the observations ``sl``) at ``eta+shift`` (``P`` is ``None`` for a
        binary scale when ``probabilities`` is false). ``eta``: the linear predictor of those
        observations when the caller already has it (not formed again)."""
        if eta is None:
            eta = self.eta if sl is None else self.eta_of(sl)
        if self.K == 1:  # Bernoulli: closed forms, no (n, 2) temporaries
            E = 1.0 / (1.0 + np.exp(-(eta + shift)))
            W = E * (1.0 - E)
            P = np.stack([1.0 - E, E], axis=1) if probabilities else None
            return P, E, W, W * (1.0 - 3.0 * W)
        P = model_probabilities(eta + shift, self.cum_rows(sl), self.K)
        kv = np.arange(self.K + 1, dtype=float)
        E = P @ kv
        d2 = np.square(kv[None, :] - E[:, None])
        W = np.einsum("ik,ik->i", P, d2)
        C = np.einsum("ik,ik->i", P, d2 * d2)
        return P, E, W, C


def model_probabilities(eta: np.ndarray, cum: np.ndarray, K: int) -> np.ndarray:
    """Category probabilities (n x K+1) of the adjacent-category (Rasch) model."""
    kv = np.arange(K + 1, dtype=float)
    psi = eta[:, None] * kv[None, :] - np.atleast_2d(cum)
    psi -= psi.max(axis=1, keepdims=True)
    P = np.exp(psi)
    P /= P.sum(axis=1, keepdims=True)
    return P


def _lookup(elements: pd.Index, values: pd.Series, facet: str, dim: str) -> np.ndarray:
    """Position in ``elements`` of every value, as int32. Labels are matched once per distinct
    value (a categorical's own codes, or after factorising): columns of millions of rows are
    never turned into strings. When the elements are the labels in their own order (the
    design keeps a categorical's order) the codes are the positions: no gather."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, uniques = category_codes(values), values.cat.categories
    else:
        codes, uniques = pd.factorize(values, sort=False)
    pos = elements.get_indexer(pd.Index(uniques).astype(str))
    if (pos < 0).any():
        used = np.zeros(len(uniques), dtype=bool)
        used[codes] = True
        if (pos[used] < 0).any():
            bad = pd.Index(uniques).astype(str)[used & (pos < 0)][0]
            raise IrtpeerError(
                f"the ratings do not match the calibration: {facet} {bad!r} of dimension {dim!r} "
                f"has no measure; pass the Ratings the calibration was fitted to"
            )
    elif np.array_equal(pos, np.arange(len(pos))):
        return codes.astype(np.int32)
    return pos.astype(np.int32)[codes]


def _person_key(cal, ratings, frame: pd.DataFrame, person_facet: str) -> pd.Series:
    if person_facet == RESPONSE_FACET:
        rf = cal.spec.response_facet
        return frame[ratings.person].astype(str) + "|" + frame[rf].astype(str)
    return frame[ratings.person]


def dimension_models(cal, ratings, dimensions: list[str] | None = None) -> list[DimensionModel]:
    """Rebuild every dimension's fitted model (or those named) from measures and ratings."""
    dims = cal.dimensions if dimensions is None else list(dimensions)
    out = []
    for d in dims:
        if d not in cal.dimensions:
            raise IrtpeerError(
                f"dimension {d!r} is not in the calibration; dimensions are "
                f"{', '.join(cal.dimensions)}"
            )
        out.append(_dimension_model(cal, ratings, d))
    return out


def _dimension_model(cal, ratings, d: str) -> DimensionModel:
    meas = cal.measures[cal.measures["dimension"].astype(str) == d]
    frame = ratings.dimension_frame(d)
    if len(frame) == 0:
        raise IrtpeerError(f"the ratings have no rows in dimension {d!r} of the calibration")
    present = list(dict.fromkeys(meas["facet"]))
    person_facet = RESPONSE_FACET if RESPONSE_FACET in present else cal.person
    facets = [person_facet] + [f for f in ratings.facets if f in present and f != person_facet]
    columns, codes, elements, measure, extreme = [], [], [], [], []
    for f in facets:
        m = meas[meas["facet"] == f]
        idx = pd.Index(m["element"].astype(str))
        key = _person_key(cal, ratings, frame, f) if f == person_facet else frame[f]
        codes.append(_lookup(idx, key, f, d))
        columns.append(ratings.person if f == person_facet else f)
        elements.append(idx.to_numpy())
        measure.append(m["measure"].to_numpy(dtype=float))
        extreme.append(m["status"].astype(str).str.startswith("extreme").to_numpy())
    cats = np.asarray(cal.meta["categories"][d], dtype=np.int64)
    score = frame["_score"].to_numpy()
    if not np.isin(_distinct_scores(score), cats).all():
        raise IrtpeerError(
            f"the ratings do not match the calibration: dimension {d!r} has scores outside its "
            f"categories {', '.join(map(str, cats))}"
        )
    x = _category_index(score, cats)
    K = len(cats) - 1
    scale = cal.meta.get("scales", {}).get(d, "binary" if K == 1 else "rsm")
    thr = meas[meas["facet"] == "threshold"]
    tau_codes, pcm_facet = None, None
    if K == 1:
        cum = np.zeros((1, 2))
    elif scale == "pcm":
        pcm_facet = cal.spec.pcm_facet
        labels = frame[pcm_facet].astype(str).to_numpy()
        el, tau_codes = np.unique(labels, return_inverse=True)
        tau = np.zeros((len(el), K))
        lookup = dict(zip(thr["element"].astype(str), thr["measure"].astype(float)))
        for i, e in enumerate(el):
            tau[i] = [lookup.get(f"{e}:{c}", np.nan) for c in cats[1:]]
        if np.isnan(tau).any():
            raise IrtpeerError(f"dimension {d!r}: partial-credit thresholds missing in measures")
        cum = np.concatenate([np.zeros((len(el), 1)), np.cumsum(tau, 1)], 1)
    else:
        lookup = dict(zip(thr["element"].astype(str), thr["measure"].astype(float)))
        tau = np.array([lookup.get(str(c), np.nan) for c in cats[1:]])
        if np.isnan(tau).any():
            raise IrtpeerError(f"dimension {d!r}: rating-scale thresholds missing in measures")
        cum = np.concatenate([[0.0], np.cumsum(tau)])[None, :]
    return DimensionModel(
        dimension=d, scale=scale, categories=cats, frame=frame, facets=facets, columns=columns,
        codes=codes, elements=elements, measure=measure, extreme=extreme, x=x,
        weights=ratings.weights(frame), cum_table=cum, tau_codes=tau_codes, pcm_facet=pcm_facet,
    )


def anchored_shift(
    dm: DimensionModel,
    groups: np.ndarray,
    n_groups: int,
    *,
    adjust: float = 0.3,
    mask: np.ndarray | None = None,
    tol: float = 1e-10,
):
    """Per group, the shift ``s`` of ``eta`` (everything else anchored) that fits its score.

    Solves ``sum_i w_i (x_i - E_i(eta_i + s_g)) = 0`` for every group ``g`` by Newton's method.
    A group whose observations are all at the lowest or highest category has no finite solution:
    its score is moved ``adjust`` score points inward (FACETS: 0.3 for elements, 0.5 for bias
    cells). Returns a dict of arrays: ``shift, se, count, observed, expected, status``
    (``expected`` at shift 0, both in score points 0..K; ``status`` ``extreme_min``/``max``).
    """
    sel = np.arange(dm.n) if mask is None else np.flatnonzero(mask)
    g = groups[sel]
    w = dm.w[sel]
    x = dm.x[sel].astype(float)
    eta = dm.eta[sel]
    cum = dm.cum_rows(sel)
    K = dm.K
    kv = np.arange(K + 1, dtype=float)
    count = np.bincount(g, weights=w, minlength=n_groups)
    nobs = np.bincount(g, minlength=n_groups)
    observed = np.bincount(g, weights=w * x, minlength=n_groups)
    at_min = np.bincount(g, weights=(x == 0), minlength=n_groups) == nobs
    at_max = np.bincount(g, weights=(x == K), minlength=n_groups) == nobs
    target = observed.copy()
    target[at_max] -= adjust
    target[at_min] += adjust
    lo, hi = adjust, K * count - adjust
    target = np.where(hi > lo, np.clip(target, lo, hi), K * count / 2)
    s = np.zeros(n_groups)
    expected0 = None
    info = np.ones(n_groups)
    for _ in range(200):
        P = model_probabilities(eta + s[g], cum, K)
        E = P @ kv
        V = P @ (kv * kv) - E * E
        if expected0 is None:
            expected0 = np.bincount(g, weights=w * E, minlength=n_groups)
        resid = np.bincount(g, weights=w * E, minlength=n_groups) - target
        info = np.bincount(g, weights=w * V, minlength=n_groups)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(info > 0, -resid / info, 0.0)
        step = np.clip(step, -1.0, 1.0)
        s += step
        if np.max(np.abs(step), initial=0.0) < tol:
            break
    with np.errstate(divide="ignore"):
        se = np.where(info > 0, 1.0 / np.sqrt(info), np.nan)
    empty = nobs == 0
    s[empty] = np.nan
    se[empty] = np.nan
    status = np.where(at_max & ~empty, "extreme_max", np.where(at_min & ~empty, "extreme_min", ""))
    return {
        "shift": s, "se": se, "count": count, "observed": observed, "expected": expected0,
        "status": status, "n_obs": nobs,
    }


def response_measures(cal, ratings, *, facet: str = "question", adjust: float = 0.3,
                      dimensions: list[str] | None = None) -> pd.DataFrame:
    """The measure of every model x ``facet`` response, per dimension, with the other facets
    anchored at their calibrated measures (FACETS' way for extreme responses: ``adjust`` score
    points inward). In response person mode the calibrated response measures are returned.

    Columns: ``dimension, <person>, <facet>, measure, se, count, status``.
    """
    person = ratings.person
    if facet not in ratings.data.columns:
        raise IrtpeerError(
            f"responses are {person} x {facet}, but {facet!r} is not a column of the ratings"
        )
    frames = []
    for dm in dimension_models(cal, ratings, dimensions):
        keys = pd.DataFrame({person: dm.frame[person].astype(str).to_numpy(),
                             facet: dm.frame[facet].astype(str).to_numpy()})
        codes = keys.groupby([person, facet], sort=True).ngroup().to_numpy()
        cells = keys.drop_duplicates().sort_values([person, facet]).reset_index(drop=True)
        if dm.facets[0] == RESPONSE_FACET and facet == cal.spec.response_facet:
            m = cal.measures[(cal.measures["dimension"].astype(str) == dm.dimension)
                             & (cal.measures["facet"] == RESPONSE_FACET)]
            look = m.set_index(m["element"].astype(str))
            lab = cells[person] + "|" + cells[facet]
            part = cells.assign(measure=look["measure"].reindex(lab).to_numpy(),
                                se=look["se"].reindex(lab).to_numpy(),
                                count=look["count"].reindex(lab).to_numpy(),
                                status=look["status"].reindex(lab).fillna("").to_numpy())
        else:
            res = anchored_shift(dm, codes, len(cells), adjust=adjust)
            first = np.zeros(len(cells), dtype=np.int64)
            first[codes] = np.arange(dm.n)
            base = dm.measure[0][dm.codes[0][first]]  # the person's measure (model mode)
            part = cells.assign(measure=base + res["shift"], se=res["se"], count=res["count"],
                                status=res["status"])
        part.insert(0, "dimension", dm.dimension)
        frames.append(part)
    return pd.concat(frames, ignore_index=True)
