"""Marginal maximum likelihood of the (rating-scale) Rasch model with normal persons, by
Gauss-Hermite quadrature: the estimator of lme4's ``glmer(r2 ~ -1 + item + (1|id), binomial)``
(there with the Laplace approximation) and of TAM's ``tam.mml``/``tam.mml.mfr``. Written here,
independently of irtpeer, as a reference for the Bayesian estimator's real-data tests."""

import numpy as np
import scipy.optimize as so
import scipy.sparse as sp
from scipy.special import logsumexp


def mml_rasch(person, item, x, K, nodes=41, grid=False):
    """Items (difficulties, free), thresholds (sum 0) and the person SD; persons ~ N(0, sigma).

    Returns ``(b, tau, sigma)`` at the maximum of the marginal likelihood (analytic gradient).
    ``grid=True`` integrates on ``nodes`` equally spaced points over +-8 SD instead of
    Gauss-Hermite nodes: needed when each person's likelihood is narrow compared with sigma
    (many ratings per person), where a fixed Gauss-Hermite rule underestimates sigma.
    """
    person, item, x = (np.asarray(a) for a in (person, item, x))
    N, P, I = len(x), person.max() + 1, item.max() + 1
    if grid:
        z = np.linspace(-8, 8, nodes)
        w = np.exp(-0.5 * z * z)
    else:
        z, w = np.polynomial.hermite_e.hermegauss(nodes)
    logw = np.log(w / w.sum())
    k = np.arange(K + 1)
    S = sp.csr_matrix((np.ones(N), (np.arange(N), person)), shape=(N, P))
    Ib = sp.csr_matrix((np.ones(N), (np.arange(N), item)), shape=(N, I))
    ge = (x[:, None] >= k[1:]).astype(float)  # 1[x >= j], j = 1..K

    def unpack(v):
        t = np.concatenate([v[I:I + K - 1], [-v[I:I + K - 1].sum()]]) if K > 1 else np.zeros(0)
        return v[:I], t, np.exp(v[-1])

    def f(v):
        b, t, s = unpack(v)
        cum = np.concatenate([[0.0], np.cumsum(t)])
        eta = s * z[:, None] - b[item][None, :]  # (nodes, obs)
        psi = eta[:, :, None] * k - cum
        lz = logsumexp(psi, axis=2)
        p = np.exp(psi - lz[..., None])
        lp = psi[:, np.arange(N), x] - lz
        per = (S.T @ lp.T).T + logw[:, None]  # (nodes, persons)
        lml = logsumexp(per, axis=0)
        post = np.exp(per - lml)[:, person]  # posterior weight of each node, per observation
        resid = x - p @ k  # d log P / d eta
        g_b = -(Ib.T @ (post * resid).sum(0))
        g_s = float((post * resid * z[:, None]).sum()) * s
        upper = np.cumsum(p[..., ::-1], axis=2)[..., ::-1][..., 1:]  # P(X >= j)
        g_t = -np.einsum("qn,qnj->j", post, ge[None] - upper) if K > 1 else np.zeros(0)
        g_free = g_t[:-1] - g_t[-1] if K > 1 else np.zeros(0)
        return -float(lml.sum()), -np.concatenate([g_b, g_free, [g_s]])

    v0 = np.zeros(I + max(K - 1, 0) + 1)
    res = so.minimize(f, v0, jac=True, method="L-BFGS-B",
                      options={"maxiter": 1000, "ftol": 1e-14, "gtol": 1e-8})
    return unpack(res.x)
