"""The nested Schur-complement solver against dense linear algebra."""

import numpy as np
import pytest
import scipy.sparse as sp

from irtpeer.estimators._blocksolve import BlockSchurSolver, NotPositiveDefinite


def facet_hessian(rng, sizes, rows, ridge=0.0):
    """Information matrix of a main-effects design: each row touches one element per facet."""
    n = sum(sizes)
    H = np.zeros((n, n))
    off = np.cumsum([0] + sizes[:-1])
    for row in rows:
        idx = off + np.asarray(row)
        s = np.array([1.0] + [-1.0] * (len(sizes) - 1))
        H[np.ix_(idx, idx)] += rng.uniform(0.05, 0.25) * np.outer(s, s)
    return H + ridge * np.eye(n), [np.arange(o, o + k) for o, k in zip(off, sizes)]


def test_two_level_elimination_response_mode_structure():
    rng = np.random.default_rng(0)
    P, Q, J, R = 300, 100, 5, 3  # persons nested in questions, as in response mode
    rows = [(p, p % Q, j, r) for p in range(P) for j in range(J) for r in range(R)]
    H, blocks = facet_hessian(rng, [P, Q, J, R], rows, ridge=0.5)
    S = BlockSchurSolver(sp.csr_matrix(H), blocks, min_eliminate=10)
    assert [len(level.d) for level in S.levels] == [300, 100]  # both eliminated exactly
    Hi = np.linalg.inv(H)
    g = rng.normal(size=(H.shape[0], 3))
    np.testing.assert_allclose(S.solve(g), Hi @ g, atol=1e-12)
    np.testing.assert_allclose(S.solve(g[:, 0]), Hi @ g[:, 0], atol=1e-12)
    np.testing.assert_allclose(S.diag_inv(), np.diag(Hi), rtol=1e-11)


def test_one_level_crossed_design():
    rng = np.random.default_rng(1)
    M, Q, J = 6, 200, 4
    rows = [(m, q, j) for m in range(M) for q in range(Q) for j in range(J) if rng.random() > 0.1]
    H, blocks = facet_hessian(rng, [M, Q, J], rows)
    # anchor one question and one judge (drop their rows/columns) to make H definite
    keep = np.ones(H.shape[0], dtype=bool)
    keep[[M + Q - 1, M + Q + J - 1]] = False
    Hk = H[np.ix_(keep, keep)]
    pos = np.cumsum(keep) - 1
    blocks_k = [pos[b[keep[b]]] for b in blocks]
    S = BlockSchurSolver(sp.csr_matrix(Hk), blocks_k, min_eliminate=10)
    assert len(S.levels) == 1 and len(S.levels[0].d) == Q - 1
    np.testing.assert_allclose(S.diag_inv(), np.diag(np.linalg.inv(Hk)), rtol=1e-10)


def test_singular_matrix_is_detected():
    rng = np.random.default_rng(2)
    rows = [(m, q) for m in range(4) for q in range(100)]
    H, blocks = facet_hessian(rng, [4, 100], rows)  # not anchored: one null direction
    with pytest.raises(NotPositiveDefinite) as e:
        BlockSchurSolver(sp.csr_matrix(H), blocks, min_eliminate=10)
    v = e.value.null_vector
    assert v is not None and np.linalg.norm(H @ v) < 1e-6 * np.linalg.norm(v)


def test_iterative_schur_solver_against_dense_inverse(monkeypatch):
    import irtpeer.estimators._cg as cg
    from irtpeer.estimators._cg import IterativeSchurSolver

    rng = np.random.default_rng(3)
    M, Q, J = 30, 120, 4
    rows = [(m, q, j) for m in range(M) for q in range(Q) for j in range(J) if rng.random() > 0.3]
    H, blocks = facet_hessian(rng, [M, Q, J], rows, ridge=0.2)
    n = H.shape[0]
    # the model x question block given as a dense piece, the rest sparse
    Hs = H.copy()
    B = H[:M, M : M + Q].copy()
    Hs[:M, M : M + Q] = 0.0
    Hs[M : M + Q, :M] = 0.0
    dense = [(np.arange(M), np.arange(M, M + Q), B)]
    S = IterativeSchurSolver(sp.csr_matrix(Hs), dense, blocks)
    assert len(S.be) == Q  # the largest facet is eliminated
    Hi = np.linalg.inv(H)
    g = rng.normal(size=(n, 3))
    np.testing.assert_allclose(S.solve(g), Hi @ g, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(S.solve(g[:, 0]), Hi @ g[:, 0], rtol=1e-8, atol=1e-10)
    monkeypatch.setattr(cg, "DENSE_S_MAX", 0)  # as if S were too big: CG solves
    want = np.zeros(n, dtype=bool)
    want[:M] = want[M + 7] = True  # remainder and eliminated elements
    iterative_diag = S.diag_inv(want)
    np.testing.assert_allclose(iterative_diag[want], np.diag(Hi)[want], rtol=1e-8)
    assert np.isnan(iterative_diag[~want]).all() and S.se_method.startswith("exact (iterative")
    idx = np.arange(5, 15)
    np.testing.assert_allclose(S.inverse_block(idx, None), Hi[np.ix_(idx, idx)], rtol=1e-8)
    monkeypatch.undo()
    np.testing.assert_allclose(S.diag_inv(), np.diag(Hi), rtol=1e-10)  # dense S: exact
    assert S.se_method.startswith("exact (Schur complement")
