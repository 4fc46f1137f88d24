"""From raw posterior draws of one dimension to the reported measures, scores and checks.

Every reported quantity is a function of the draws in the reported identification (persons
float, other facets sum to zero, thresholds sum to zero), computed per draw: posterior means are
the ``measure``, posterior SDs the ``se``, highest-density intervals ``hdi_low``/``hdi_high``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._design import DimensionDesign
from .._fitrecord import MEASURE_COLUMNS
from ._bayes_model import Cells

__all__ = ["Reported", "cell_logprobs", "measures_table", "ppc_table", "reported_draws"]


@dataclass
class Reported:
    """Draws (chain, draw, elements) of every reported facet, in the reported identification."""

    names: list[str]  # facet names, persons first (then "response" in hierarchical mode)
    labels: list[np.ndarray]
    draws: list[np.ndarray]
    tau: np.ndarray | None  # (chain, draw, K) or (chain, draw, L, K)
    scalars: dict[str, np.ndarray]  # sigma_theta, sigma_u, sigma_q, mu: (chain, draw)
    cell_person: np.ndarray  # for each cell, index into the person-level array used in eta
    person_level: int  # position in ``draws`` of the array that enters eta (persons/responses)


def reported_draws(design: DimensionDesign, cells: Cells, raw: dict, free: int | None) -> Reported:
    theta = np.asarray(raw["theta"], dtype=float)
    facets = [np.asarray(raw[f"b{a}"], dtype=float) for a in range(1, len(cells.sizes))]
    for a in {free, cells.random_facet} - {None}:
        b = facets[a - 1]
        shift = b.mean(-1, keepdims=True)
        facets[a - 1] = b - shift  # eta = (theta - m) - (b - m): unchanged
        theta = theta - shift
    names = [design.person_facet]
    labels = [design.person_labels]
    draws = [theta]
    cell_person, level = cells.idx[0], 0
    if cells.resp is not None:
        resp = theta[..., cells.resp_model] + raw["sigma_u"][..., None] * raw["z_u"]
        names.append("response")
        labels.append(cells.resp_labels)
        draws.append(resp)
        cell_person, level = cells.resp, 1
    names += list(design.facet_names)
    labels += list(design.facet_labels)
    draws += facets
    scalars = {k: np.asarray(raw[k], dtype=float) for k in ("mu", "sigma_theta", "sigma_u", "sigma_q")
               if k in raw}
    tau = np.asarray(raw["tau"], dtype=float) if "tau" in raw else None
    return Reported(names, labels, draws, tau, scalars, cell_person, level)


def _facet_cells(rep: Reported, cells: Cells, i: int) -> np.ndarray:
    """Element of reported facet ``i`` in each cell."""
    if i == 0:
        return cells.idx[0]
    if rep.person_level == 1:
        return cells.resp if i == 1 else cells.idx[i - 1]
    return cells.idx[i]


def cell_logprobs(rep: Reported, cells: Cells, flat_draws: np.ndarray) -> np.ndarray:
    """Log category probabilities (draws, cells, K+1) at the flattened draws ``flat_draws``."""
    def take(arr):
        a = arr.reshape(-1, *arr.shape[2:])
        return a[flat_draws]

    eta = take(rep.draws[rep.person_level])[:, rep.cell_person]
    first = rep.person_level + 1
    for i in range(first, len(rep.draws)):
        eta = eta - take(rep.draws[i])[:, _facet_cells(rep, cells, i)]
    K = cells.K
    k = np.arange(K + 1, dtype=float)
    psi = eta[:, :, None] * k
    if rep.tau is not None:
        tau = take(rep.tau)
        cum = np.concatenate([np.zeros(tau.shape[:-1] + (1,)), np.cumsum(tau, -1)], -1)
        psi = psi - (cum[:, None, :] if cells.pcm is None else cum[:, cells.idx[cells.pcm]])
    mx = psi.max(-1, keepdims=True)
    return psi - (mx + np.log(np.exp(psi - mx).sum(-1, keepdims=True)))


def _hdi(arr: np.ndarray, prob: float) -> np.ndarray:
    """Highest-density interval per element of (chain, draw, elements): (elements, 2)."""
    flat = np.sort(arr.reshape(-1, arr.shape[-1]), axis=0)
    n = flat.shape[0]
    width = max(1, int(np.floor(prob * n)))
    spans = flat[width:] - flat[: n - width]
    lo = np.argmin(spans, axis=0)
    cols = np.arange(flat.shape[1])
    return np.stack([flat[lo, cols], flat[lo + width, cols]], axis=1)


def measures_table(design: DimensionDesign, cells: Cells, rep: Reported, hdi_prob: float):
    """The measures table (MEASURE_COLUMNS + hdi_low, hdi_high) of one dimension."""
    K = cells.K
    cats = design.categories.astype(float)
    total_c = cells.counts.sum(1)
    score_c = cells.counts @ cats
    info = _information(rep, cells)
    frames = []
    for i, (name, labs, d) in enumerate(zip(rep.names, rep.labels, rep.draws)):
        e = _facet_cells(rep, cells, i)
        size = d.shape[-1]
        cnt = np.bincount(e, weights=total_c, minlength=size)
        tot = np.bincount(e, weights=score_c, minlength=size)
        nmin = np.bincount(e, weights=cells.counts[:, 0], minlength=size)
        nmax = np.bincount(e, weights=cells.counts[:, K], minlength=size)
        status = np.where(nmax == cnt, "extreme_max", np.where(nmin == cnt, "extreme_min", ""))
        with np.errstate(divide="ignore"):
            se_model = 1.0 / np.sqrt(np.bincount(e, weights=info, minlength=size))
        frames.append(_rows(design, name, labs, d, se_model, cnt, tot, status, hdi_prob))
    if rep.tau is not None:
        frames.append(_threshold_rows(design, cells, rep, hdi_prob))
    return pd.concat(frames, ignore_index=True)


def _rows(design, facet, labels, d, se_model, cnt, tot, status, hdi_prob):
    flat = d.reshape(-1, d.shape[-1])
    hdi = _hdi(d, hdi_prob)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = tot / cnt
    return pd.DataFrame({
        "dimension": design.dimension, "facet": facet, "element": labels,
        "measure": flat.mean(0), "se": flat.std(0, ddof=1), "se_model": se_model,
        "count": cnt, "total": tot, "observed_average": avg, "status": status,
        "hdi_low": hdi[:, 0], "hdi_high": hdi[:, 1],
    })[MEASURE_COLUMNS + ["hdi_low", "hdi_high"]]


def _threshold_rows(design, cells: Cells, rep: Reported, hdi_prob: float):
    K = cells.K
    cats = design.categories
    tau = rep.tau.reshape(rep.tau.shape[0], rep.tau.shape[1], -1)
    if cells.pcm is None:
        elements = [str(c) for c in cats[1:]]
        cnt = cells.counts.sum(0)[1:]
    else:
        labs = design.facet_labels[cells.pcm - 1]
        elements = [f"{labs[e]}:{c}" for e in range(len(labs)) for c in cats[1:]]
        per = np.zeros((len(labs), K + 1))
        np.add.at(per, cells.idx[cells.pcm], cells.counts)
        cnt = per[:, 1:].ravel()
    nan = np.full(len(elements), np.nan)
    se_model = _threshold_se_model(rep, cells)
    return _rows(design, "threshold", np.array(elements), tau, se_model, cnt, nan, "", hdi_prob)


def _threshold_se_model(rep: Reported, cells: Cells) -> np.ndarray:
    """1/sqrt(information) of each threshold alone: sum_c N_c P(X>=k)(1 - P(X>=k))."""
    p = np.exp(cell_logprobs(_at_means(rep), cells, np.array([0]))[0])
    upper = np.cumsum(p[:, ::-1], axis=1)[:, ::-1][:, 1:]  # P(X >= k), k = 1..K
    info = cells.counts.sum(1)[:, None] * upper * (1 - upper)
    if cells.pcm is None:
        tot = info.sum(0)
    else:
        tot = np.zeros((cells.sizes[cells.pcm], cells.K))
        np.add.at(tot, cells.idx[cells.pcm], info)
    return 1.0 / np.sqrt(tot.ravel())


def _at_means(rep: Reported) -> Reported:
    return Reported(
        rep.names, rep.labels, [d.reshape(-1, d.shape[-1]).mean(0)[None, None] for d in rep.draws],
        None if rep.tau is None else rep.tau.reshape(-1, *rep.tau.shape[2:]).mean(0)[None, None],
        {}, rep.cell_person, rep.person_level,
    )


def _information(rep: Reported, cells: Cells) -> np.ndarray:
    """Fisher information of each cell at the posterior means (FACETS' model SE)."""
    p = np.exp(cell_logprobs(_at_means(rep), cells, np.array([0]))[0])
    k = np.arange(cells.K + 1, dtype=float)
    var = p @ (k * k) - (p @ k) ** 2
    return cells.counts.sum(1) * var


def ppc_table(design: DimensionDesign, cells: Cells, rep: Reported, seed, n_draws: int = 200,
              prob: float = 0.90) -> pd.DataFrame:
    """Posterior predictive check of the score distribution of every facet element.

    For ``n_draws`` posterior draws, replicate every cell's ratings (multinomial with the cell's
    count) and count each category per element. Columns: observed count, the replicated mean,
    the central ``prob`` interval and ``p_value`` = P(replicated >= observed) (two-sided flags
    come from ``outside``).
    """
    rng = np.random.default_rng(seed)
    n_total = rep.draws[0].shape[0] * rep.draws[0].shape[1]
    pick = np.unique(np.linspace(0, n_total - 1, min(n_draws, n_total)).astype(int))
    logp = cell_logprobs(rep, cells, pick)
    n = np.rint(cells.counts.sum(1)).astype(np.int64)
    reps = np.stack([rng.multinomial(n, np.exp(lp)) for lp in logp])  # (S, cells, K+1)
    K1 = cells.K + 1
    frames = []
    skip = {"response"}
    for i, (name, labs) in enumerate(zip(rep.names, rep.labels)):
        if name in skip:
            continue
        e = _facet_cells(rep, cells, i)
        size = len(labs)
        key = (e[:, None] * K1 + np.arange(K1)).ravel()
        obs = np.bincount(key, weights=cells.counts.ravel(), minlength=size * K1)
        sim = np.stack([np.bincount(key, weights=r.ravel(), minlength=size * K1) for r in reps])
        lo, hi = np.quantile(sim, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        frames.append(pd.DataFrame({
            "dimension": design.dimension, "facet": name,
            "element": np.repeat(labs, K1), "category": np.tile(design.categories, size),
            "observed": obs, "predicted": sim.mean(0), "low": lo, "high": hi,
            "p_value": (sim >= obs).mean(0),
            "outside": (obs < lo) | (obs > hi),
        }))
    return pd.concat(frames, ignore_index=True)
