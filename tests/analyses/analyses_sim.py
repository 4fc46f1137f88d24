"""Ratings with planted effects for the analyses' tests (a uniquely named helper module).

``irtpeer.simulate`` draws a clean many-facet Rasch design; the analyses need data that break the
model in known places (an erratic judge, a judge x model bias, a stretched dimension, model x
question interactions), so this generator takes the linear predictor's parts explicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import irtpeer


def draw_scores(eta: np.ndarray, K: int, rng: np.random.Generator) -> np.ndarray:
    """Scores 0..K from the Andrich model with evenly spaced thresholds (binary when K == 1)."""
    if K == 1:
        return (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    tau = np.linspace(-1.5, 1.5, K)
    kv = np.arange(K + 1)
    psi = eta[:, None] * kv - np.concatenate([[0.0], np.cumsum(tau)])
    P = np.exp(psi - psi.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    return (rng.random(len(eta))[:, None] > np.cumsum(P, 1)).sum(1).astype(np.int64)


def crossed(theta, beta, alpha, delta, *, K=1, dimension="A", seed=0, u=None, bias=None,
            erratic=None, erratic_share=0.6):
    """A fully crossed models x questions x judges x items frame for one dimension.

    ``u`` (models x questions) adds response effects; ``bias`` maps (judge index, model index) to
    a shift of eta (negative = that judge scores that model lower = harsher); ``erratic`` is a
    judge index whose scores are replaced by uniform random categories with ``erratic_share``.
    """
    rng = np.random.default_rng(seed)
    M, Q, J, R = len(theta), len(beta), len(alpha), len(delta)
    m, q, j, r = (a.ravel() for a in np.meshgrid(np.arange(M), np.arange(Q), np.arange(J),
                                                 np.arange(R), indexing="ij"))
    eta = theta[m] - beta[q] - alpha[j] - delta[r]
    if u is not None:
        eta = eta + u[m, q]
    for (jj, mm), b in (bias or {}).items():
        eta = eta + b * ((j == jj) & (m == mm))
    score = draw_scores(eta, K, rng)
    if erratic is not None:
        sel = (j == erratic) & (rng.random(len(score)) < erratic_share)
        score[sel] = rng.integers(0, K + 1, sel.sum())
    return pd.DataFrame({
        "model": [f"m{i}" for i in m], "question": [f"q{i:03d}" for i in q],
        "judge": [f"j{i}" for i in j], "item": [f"{dimension}{i}" for i in r],
        "dimension": dimension, "score": score,
    })


def fit(frame, **kwargs):
    ratings = irtpeer.load_ratings(frame)
    cal = irtpeer.TorchMFRM(device="cpu", **kwargs).fit(ratings).calibration_
    return cal, ratings
