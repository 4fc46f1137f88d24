"""The PyMC model of one dimension for the Bayesian estimator, on aggregated cells.

Cells
-----
Observations that share every facet element (the same person, question, judge, item, ...) have
the same category probabilities, so the likelihood only needs, per distinct cell, the weighted
count of each category: ``counts[c, k]``. The log-likelihood of the adjacent-category (Andrich /
partial credit) model is then

    sum_c [ S_c * eta_c - sum_k n_ck * C_k(c) - N_c * log sum_k exp(k * eta_c - C_k(c)) ]

with ``S_c = sum_k k n_ck`` the cell's score total, ``N_c`` its count and ``C_k`` the cumulated
thresholds; the threshold term is a sufficient statistic (category totals) and needs no pass over
the cells. Identical cells are merged before sampling, so a replicated or model-level design costs
the number of distinct cells, not the number of judgments.

Parametrisation
---------------
* Persons: ``normal`` prior ``theta ~ N(0, sigma_theta)`` (non-centred when persons have few
  observations, centred otherwise), ``sigma_theta`` estimated, the first facet free and centred
  afterwards (see :func:`free_facet`); ``flat``: a wide normal.
* Hierarchical person mode: ``theta_mq = theta_m + sigma_u * z_mq`` (non-centred).
* Other facets: ``ZeroSumNormal`` (exactly centred, like the torch estimator's identification), or,
  for the question facet when ``question_effects="random"``, ``N(0, sigma_q)`` centred afterwards.
* Thresholds: ``ZeroSumNormal`` over the K steps (per element of the partial-credit facet).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._design import DimensionDesign
from .._errors import DesignError

__all__ = ["DEFAULT_PRIORS", "Cells", "build_cells", "build_model", "free_facet", "resolve_priors"]

#: Prior scales (logits) of the Bayesian estimator; every one can be set with ``priors={...}``.
DEFAULT_PRIORS = {
    "facet_sigma": 5.0,  # ZeroSumNormal sigma of each centred facet (weakly informative)
    "threshold_sigma": 5.0,  # ZeroSumNormal sigma of the thresholds
    "person_mean_sigma": 5.0,  # normal prior sd of the person mean mu
    "person_sigma": 2.5,  # half-normal scale of sigma_theta (person SD)
    "response_sigma": 1.0,  # half-normal scale of sigma_u (hierarchical response SD)
    "question_sigma": 2.5,  # half-normal scale of sigma_q (random question effects)
    "flat_sigma": 10.0,  # sd of the wide normal used by person_prior="flat"
}

#: Persons with at least this many observations on average get the centred parametrisation.
_CENTRED_MIN_COUNT = 20


def resolve_priors(priors: dict | None) -> dict:
    from .._errors import IrtpeerError

    out = dict(DEFAULT_PRIORS)
    for k, v in (priors or {}).items():
        if k not in DEFAULT_PRIORS:
            raise IrtpeerError(
                f"unknown prior {k!r}; the priors are {', '.join(DEFAULT_PRIORS)}"
            )
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise IrtpeerError(f"prior {k} must be a number > 0, got {v!r}") from None
        if not (v > 0 and np.isfinite(v)):
            raise IrtpeerError(f"prior {k} must be a number > 0, got {v!r}")
        out[k] = v
    return out


@dataclass
class Dense:
    """Cells laid out as rows (person x question) by columns (the other facets' combinations).

    ``eta[r, c] = a[r] - c[c]``: the gathers run over rows and columns, not over cells, and the
    score term needs only row and column totals. Used when rows x columns is at most
    :data:`_DENSE_FILL` times the number of cells (empty positions have zero counts).
    """

    rows: list[int]  # facet positions whose elements define a row (persons first)
    cols: list[int]
    row_elems: dict[int, np.ndarray]
    col_elems: dict[int, np.ndarray]
    counts: np.ndarray  # (rows, cols, K+1)
    row_resp: np.ndarray | None = None  # hierarchical: the response of each row


_DENSE_FILL = 1.25


@dataclass
class Cells:
    """Distinct cells of one dimension with their weighted category counts."""

    idx: list[np.ndarray]  # per facet (persons first): element of each cell
    sizes: list[int]
    counts: np.ndarray  # (cells, K+1)
    K: int
    pcm: int | None
    resp: np.ndarray | None = None  # hierarchical: response (model x question) of each cell
    resp_model: np.ndarray | None = None  # model of each response
    resp_labels: np.ndarray | None = None
    random_facet: int | None = None  # position of the facet with random effects, if any
    dense: Dense | None = None  # the same counts as a rows x columns block, when nearly complete

    @property
    def n_cells(self) -> int:
        return len(self.counts)

    def obs_per_person(self) -> float:
        n = np.bincount(self.idx[0], weights=self.counts.sum(1), minlength=self.sizes[0])
        return float(n.mean())


def build_cells(
    design: DimensionDesign, person_mode: str, response_facet: str, question_effects: str
) -> Cells:
    """Merge identical observations of ``design`` into cells with category counts."""
    data = design.data
    K = data.K
    idx = np.stack([np.asarray(i, dtype=np.int64) for i in data.idx], axis=1)
    uniq, inv = np.unique(idx, axis=0, return_inverse=True)
    inv = inv.ravel()
    w = np.ones(len(data.x)) if data.w is None else np.asarray(data.w, dtype=float)
    counts = np.bincount(inv * (K + 1) + data.x, weights=w, minlength=len(uniq) * (K + 1))
    cells = Cells(
        idx=[uniq[:, a].copy() for a in range(uniq.shape[1])],
        sizes=list(data.sizes),
        counts=counts.reshape(len(uniq), K + 1),
        K=K,
        pcm=data.pcm,
    )
    qpos = _facet_position(design, response_facet)
    if person_mode == "hierarchical":
        if qpos is None:
            raise DesignError(
                f"person mode 'hierarchical' needs the facet {response_facet!r} to define a "
                f"response (model x {response_facet}) in dimension {design.dimension!r}; facets "
                f"are {', '.join(design.facet_names) or 'none'}"
            )
        key = cells.idx[0] * cells.sizes[qpos] + cells.idx[qpos]
        rkeys, rinv = np.unique(key, return_inverse=True)
        cells.resp = rinv.ravel()
        cells.resp_model = rkeys // cells.sizes[qpos]
        q_of = rkeys % cells.sizes[qpos]
        cells.resp_labels = np.array(
            [f"{design.model_labels[m]}|{design.facet_labels[qpos - 1][q]}"
             for m, q in zip(cells.resp_model, q_of)]
        )
    if question_effects == "random":
        if qpos is None:
            raise DesignError(
                f"random question effects need the facet {response_facet!r}; facets of dimension "
                f"{design.dimension!r} are {', '.join(design.facet_names) or 'none'}"
            )
        cells.random_facet = qpos
    cells.dense = _dense_layout(cells, qpos)
    return cells


def _dense_layout(cells: Cells, qpos: int | None) -> Dense | None:
    rows = [0] + ([qpos] if qpos is not None else [])
    cols = [a for a in range(1, len(cells.sizes)) if a not in rows]
    if not cols:
        return None
    ru, rinv = np.unique(np.stack([cells.idx[a] for a in rows], 1), axis=0, return_inverse=True)
    cu, cinv = np.unique(np.stack([cells.idx[a] for a in cols], 1), axis=0, return_inverse=True)
    R, C = len(ru), len(cu)
    if C < 2 or R * C > _DENSE_FILL * cells.n_cells:
        return None
    rinv, cinv = rinv.ravel(), cinv.ravel()
    counts = np.zeros((R, C, cells.K + 1))
    counts[rinv, cinv] = cells.counts
    row_resp = None
    if cells.resp is not None:
        row_resp = np.zeros(R, dtype=np.int64)
        row_resp[rinv] = cells.resp
    return Dense(rows, cols, {a: ru[:, i] for i, a in enumerate(rows)},
                 {a: cu[:, i] for i, a in enumerate(cols)}, counts, row_resp)


def _facet_position(design: DimensionDesign, facet: str) -> int | None:
    return 1 + design.facet_names.index(facet) if facet in design.facet_names else None


def build_model(cells: Cells, priors: dict, person_prior: str, person_mode: str):
    """The PyMC model of one dimension; the log-likelihood enters as one ``Potential``."""
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as model:
        theta = _person_block(pm, cells, priors, person_prior, person_mode)
        u = None
        if cells.resp is not None:
            sigma_u = pm.HalfNormal("sigma_u", sigma=priors["response_sigma"])
            z_u = pm.Normal("z_u", 0.0, 1.0, shape=len(cells.resp_model))
            u = sigma_u * z_u
        free = free_facet(cells, person_prior)
        bs = {}
        for a in range(1, len(cells.sizes)):
            if a == free:
                bs[a] = pm.Normal(f"b{a}", 0.0, priors["facet_sigma"], shape=cells.sizes[a])
            elif a == cells.random_facet:
                sigma_q = pm.HalfNormal("sigma_q", sigma=priors["question_sigma"])
                bs[a] = pm.Normal(f"b{a}", 0.0, sigma_q, shape=cells.sizes[a])
            else:
                bs[a] = pm.ZeroSumNormal(f"b{a}", sigma=priors["facet_sigma"],
                                         shape=cells.sizes[a])
        cum = _cumulated_thresholds(pm, pt, cells, priors)
        if cells.dense is not None:
            ll = _loglik_dense(pt, cells, theta, u, bs, cum)
        else:
            eta = theta[cells.idx[0]]
            if u is not None:
                eta = eta + u[cells.resp]
            for a, b in bs.items():
                eta = eta - b[cells.idx[a]]
            ll = _loglik(pt, cells, eta, cum)
        pm.Potential("loglik", ll)
    return model


def _cumulated_thresholds(pm, pt, cells: Cells, priors: dict):
    """[0, tau_1, tau_1 + tau_2, ...] (K+1,) or per partial-credit element (L, K+1); None if K=1."""
    K = cells.K
    if K == 1:
        return None
    if cells.pcm is None:
        tau = pm.ZeroSumNormal("tau", sigma=priors["threshold_sigma"], shape=K)
        return pt.concatenate([pt.zeros(1), pt.cumsum(tau)])
    L = cells.sizes[cells.pcm]
    tau = pm.ZeroSumNormal("tau", sigma=priors["threshold_sigma"], shape=(L, K))
    return pt.concatenate([pt.zeros((L, 1)), pt.cumsum(tau, axis=1)], axis=1)


def _threshold_term(pt, cells: Cells, cum):
    """sum over cells and categories of n_ck * C_k: category totals (sufficient statistics)."""
    if cells.pcm is None:
        return pt.dot(cells.counts.sum(0), cum)
    cat_tot = np.zeros((cells.sizes[cells.pcm], cells.K + 1))
    np.add.at(cat_tot, cells.idx[cells.pcm], cells.counts)
    return pt.sum(cat_tot * cum)


def _loglik_dense(pt, cells: Cells, theta, u, bs: dict, cum):
    d = cells.dense
    a = theta[d.row_elems[0]]
    if u is not None:
        a = a + u[d.row_resp]
    for f in d.rows[1:]:
        a = a - bs[f][d.row_elems[f]]
    c = sum(bs[f][d.col_elems[f]] for f in d.cols)
    eta = a[:, None] - c[None, :]
    k = np.arange(cells.K + 1, dtype=float)
    score = d.counts @ k  # (rows, cols)
    total = d.counts.sum(-1)
    lin = pt.dot(score.sum(1), a) - pt.dot(score.sum(0), c)
    if cells.K == 1:
        from ._bayes_ops import softplus_dot

        return lin - softplus_dot(eta, total)
    if cells.pcm is None:
        psi = eta[:, :, None] * k - cum
    elif cells.pcm in d.col_elems:
        psi = eta[:, :, None] * k - cum[d.col_elems[cells.pcm]][None, :, :]
    else:
        psi = eta[:, :, None] * k - cum[d.row_elems[cells.pcm]][:, None, :]
    return lin - _threshold_term(pt, cells, cum) - pt.sum(total * pt.logsumexp(psi, axis=2))


def free_facet(cells: Cells, person_prior: str) -> int | None:
    """The facet whose sum is left free while sampling (centred afterwards), or None.

    With the normal person prior the persons are N(0, sigma_theta) and the first facet carries the
    location, like ``glmer(y ~ -1 + item + (1|person))``: a separate person mean would be tied to
    the sum of the person measures (a ridge NUTS crosses slowly). Afterwards that facet is centred
    and the persons shifted by the same amount, which leaves every probability unchanged.
    """
    if person_prior != "normal" or cells.random_facet is not None or len(cells.sizes) < 2:
        return None
    return 1


def _person_block(pm, cells: Cells, priors: dict, person_prior: str, person_mode: str):
    P = cells.sizes[0]
    if person_prior == "flat":
        return pm.Normal("theta", 0.0, priors["flat_sigma"], shape=P)
    sigma = pm.HalfNormal("sigma_theta", sigma=priors["person_sigma"])
    if free_facet(cells, person_prior) is not None:
        mu = 0.0
    else:
        mu = pm.Normal("mu", 0.0, priors["person_mean_sigma"])
    if cells.obs_per_person() >= _CENTRED_MIN_COUNT:
        return pm.Normal("theta", mu, sigma, shape=P)
    z = pm.Normal("z_theta", 0.0, 1.0, shape=P)
    return pm.Deterministic("theta", mu + sigma * z)


def _loglik(pt, cells: Cells, eta, cum):
    counts = cells.counts
    total = counts.sum(1)
    if cells.K == 1:
        from ._bayes_ops import softplus_dot

        return pt.dot(counts[:, 1], eta) - softplus_dot(eta, total)
    k = np.arange(cells.K + 1, dtype=float)
    if cells.pcm is None:
        psi = eta[:, None] * k[None, :] - cum[None, :]
    else:
        psi = eta[:, None] * k[None, :] - cum[cells.idx[cells.pcm]]
    return (pt.dot(counts @ k, eta) - _threshold_term(pt, cells, cum)
            - pt.dot(total, pt.logsumexp(psi, axis=1).ravel()))
