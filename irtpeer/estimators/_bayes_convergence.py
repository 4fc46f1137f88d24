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

__all__ = ["convergence", "ess_bulk", "ess_tail", "rhat_rank"]


def _split(x: np.ndarray) -> np.ndarray:
    """(chain, draw, params) -> split chains, params-major: (params, 2 * chain, draw // 2)."""
    d = x.shape[1]
    half = d // 2
    s = np.concatenate([x[:, :half], x[:, d - half:]], axis=0)
    return np.ascontiguousarray(np.moveaxis(s, -1, 0))


def _z_scale(s: np.ndarray) -> np.ndarray:
    """Rank-normalise each parameter over all its chains and draws (ties: average ranks)."""
    return _z_and_sorted(s)[0]


def _z_and_sorted(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rank-normalised draws and each parameter's draws sorted (params, chains * draws)."""
    from scipy.stats import rankdata

    P = s.shape[0]
    flat = s.reshape(P, -1)
    n = flat.shape[1]
    order = np.argsort(flat, axis=1)
    ranks = np.empty(flat.shape)
    np.put_along_axis(ranks, order, np.arange(1.0, n + 1)[None, :], axis=1)
    srt = np.take_along_axis(flat, order, axis=1)
    tied = (np.diff(srt, axis=1) == 0).any(1)
    if tied.any():  # average ranks where values repeat (argsort alone would order ties)
        ranks[tied] = rankdata(flat[tied], axis=1, method="average")
    return ndtri((ranks - 0.375) / (n + 0.25)).reshape(s.shape), srt


def _quantile(srt: np.ndarray, q: float) -> np.ndarray:
    """np.quantile(..., method="linear") of each row of the sorted draws ``srt``."""
    n = srt.shape[1]
    pos = q * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    return np.quantile(srt[:, [lo, hi]], (pos - lo), axis=1) if hi > lo else srt[:, lo]


def _rhat(s: np.ndarray) -> np.ndarray:
    n = s.shape[2]
    B = n * s.mean(2).var(1, ddof=1)
    W = s.var(2, ddof=1).mean(1)
    return np.sqrt(((n - 1) / n * W + B / n) / W)


def rhat_rank(x: np.ndarray) -> np.ndarray:
    """max(split R-hat of the rank-normalised draws, of the folded draws), per parameter."""
    return _rhat_rank(_split(x))[0]


def convergence(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank R-hat, bulk ESS, tail ESS) per parameter of draws (chain, draw, params).

    One split and one sort serve all three (the rank normalisation, the median for the folded
    draws and the 5%/95% quantiles of the tail ESS): the same numbers as :func:`rhat_rank`,
    :func:`ess_bulk` and :func:`ess_tail` one by one, in about 60% of the time.
    """
    s = _split(x)
    rhat, z, srt = _rhat_rank(s)
    return rhat, _ess(z), _tail(s, srt)


def _rhat_rank(s: np.ndarray):
    z, srt = _z_and_sorted(s)
    n = srt.shape[1]
    med = srt[:, n // 2] if n % 2 else np.mean(srt[:, n // 2 - 1: n // 2 + 1], axis=1)  # np.median
    zf = _z_scale(np.abs(s - med[:, None, None]))
    return np.maximum(_rhat(z), _rhat(zf)), z, srt


def _tail(s: np.ndarray, srt: np.ndarray) -> np.ndarray:
    lo, hi = _quantile(srt, 0.05), _quantile(srt, 0.95)
    return np.minimum(_ess((s <= lo[:, None, None]).astype(float)),
                      _ess((s <= hi[:, None, None]).astype(float)))


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
    return _tail(s, _z_and_sorted(s)[1])
