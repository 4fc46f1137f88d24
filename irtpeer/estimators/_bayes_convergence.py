"""Rank-normalised split R-hat and bulk/tail ESS (Vehtari et al. 2021), vectorised over
parameters.

ArviZ computes the same quantities one parameter at a time; with thousands of response effects
that took longer than sampling. Here every public function takes draws shaped (chain, draw,
params) and works on all parameters at once (internally params-major, so that sorting and FFTs
run along contiguous memory); the results equal ArviZ's ``rhat(method="rank")`` and
``ess(method="bulk"/"tail")`` (tested).
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

__all__ = ["ess_bulk", "ess_tail", "rhat_rank"]


def _split(x: np.ndarray) -> np.ndarray:
    """(chain, draw, params) -> split chains, params-major: (params, 2 * chain, draw // 2)."""
    d = x.shape[1]
    half = d // 2
    s = np.concatenate([x[:, :half], x[:, d - half:]], axis=0)
    return np.ascontiguousarray(np.moveaxis(s, -1, 0))


def _z_scale(s: np.ndarray) -> np.ndarray:
    """Rank-normalise each parameter over all its chains and draws (ties: average ranks)."""
    from scipy.stats import rankdata

    P = s.shape[0]
    flat = s.reshape(P, -1)
    n = flat.shape[1]
    order = np.argsort(flat, axis=1)
    ranks = np.empty(flat.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, n + 1)[None, :], axis=1)
    tied = (np.diff(np.take_along_axis(flat, order, axis=1), axis=1) == 0).any(1)
    if tied.any():  # average ranks where values repeat (argsort alone would order ties)
        ranks[tied] = rankdata(flat[tied], axis=1, method="average")
    return ndtri((ranks - 0.375) / (n + 0.25)).reshape(s.shape)


def _rhat(s: np.ndarray) -> np.ndarray:
    n = s.shape[2]
    B = n * s.mean(2).var(1, ddof=1)
    W = s.var(2, ddof=1).mean(1)
    return np.sqrt(((n - 1) / n * W + B / n) / W)


def rhat_rank(x: np.ndarray) -> np.ndarray:
    """max(split R-hat of the rank-normalised draws, of the folded draws), per parameter."""
    s = _split(x)
    med = np.median(s.reshape(s.shape[0], -1), axis=1)
    folded = np.abs(s - med[:, None, None])
    return np.maximum(_rhat(_z_scale(s)), _rhat(_z_scale(folded)))


def _ess(s: np.ndarray) -> np.ndarray:
    """ESS of (params, chains, draws) draws with Geyer's initial monotone sequence."""
    C, n = s.shape[1:]
    m = 2 ** int(np.ceil(np.log2(2 * n)))
    xc = s - s.mean(2, keepdims=True)
    f = np.fft.rfft(xc, n=m, axis=2)
    acov = np.fft.irfft(f * np.conj(f), n=m, axis=2)[..., :n] / n  # (params, chains, lags)
    mean_var = acov[:, :, 0].mean(1) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if C > 1:
        var_plus = var_plus + s.mean(2).var(1, ddof=1)
    rho = 1.0 - (mean_var[:, None] - acov.mean(1)) / var_plus[:, None]  # (params, lags)
    rho[:, 0] = 1.0
    # Geyer: sums of consecutive pairs up to the first non-positive one, made monotone; the even
    # term of that first non-positive pair is added when positive (as ArviZ does)
    npair = (n - 2) // 2
    pairs = rho[:, : 2 * npair].reshape(-1, npair, 2).sum(2)
    positive = np.cumprod(pairs > 0, axis=1).astype(bool)
    mono = np.minimum.accumulate(np.where(positive, pairs, np.inf), axis=1)
    mono = np.where(positive, mono, 0.0)
    k = positive.sum(1)
    even = rho[np.arange(rho.shape[0]), np.minimum(2 * k, n - 1)]
    extra = np.where((k < npair) & (even > 0), even, 0.0)
    tau = -1.0 + 2.0 * mono.sum(1) + extra
    tau = np.maximum(tau, 1.0 / np.log10(C * n))
    return C * n / tau


def ess_bulk(x: np.ndarray) -> np.ndarray:
    return _ess(_z_scale(_split(x)))


def ess_tail(x: np.ndarray) -> np.ndarray:
    s = _split(x)
    lo, hi = np.quantile(s.reshape(s.shape[0], -1), [0.05, 0.95], axis=1)
    return np.minimum(_ess((s <= lo[:, None, None]).astype(float)),
                      _ess((s <= hi[:, None, None]).astype(float)))
