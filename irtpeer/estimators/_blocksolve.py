"""Solving with a facet-structured Hessian by nested Schur complements.

In a many-facet model every observation touches exactly one element of each facet, so the block
of the Hessian that couples a facet with itself is diagonal. We exploit that: the largest facet
whose (current) block is diagonal is eliminated exactly,

    H = [[D, C], [C^T, E]]   ->   S = E - C^T D^{-1} C,

and the elimination repeats on ``S`` while a large block of it is still diagonal (in response mode
the persons go first, then the questions, because each person is nested in one question). What is
left is small and dense and is factorised by Cholesky. Nothing of the size of the largest facet
squared is ever formed.

With ``W = D^{-1} C`` and ``Y = S^{-1}`` the inverse is ``[[D^{-1} + W Y W^T, -W Y], [-Y W^T, Y]]``,
so the diagonal of ``H^{-1}`` on the eliminated block is ``1/d + diag(W Y W^T)``; the quadratic
forms ``w^T Y w`` recurse level by level: with ``w = (a, u)`` split like the next level,
``w^T Y w = a^T D'^{-1} a + z^T Y' z`` where ``z = u - W'^T a``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

__all__ = ["BlockSchurSolver", "NotPositiveDefinite", "SchurPlan"]

#: Eliminations whose C (eliminated x remaining) has at most this many cells, a quarter of them
#: or more filled, form the Schur complement densely (C as a dense array: 160 MB at most).
_DENSE_PRODUCT_CELLS = 20_000_000


class NotPositiveDefinite(np.linalg.LinAlgError):
    """The matrix is singular or indefinite (an unidentified design)."""

    def __init__(self, message: str, null_vector: np.ndarray | None = None):
        super().__init__(message)
        self.null_vector = null_vector


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """The same elements of the same buffer (scipy hands out new views of a matrix's index
    arrays): equal without comparing them."""
    return (a.dtype == b.dtype and a.strides == b.strides
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _sub(M: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, _name=None) -> sp.csr_matrix:
    return M[rows][:, cols].tocsr()


class SchurPlan:
    """What the first elimination of :class:`BlockSchurSolver` found for one sparsity pattern:
    the block eliminated and, for each sub-matrix taken, where its entries sit in the full
    matrix's data. Later matrices of the same pattern only gather their data."""

    def __init__(self):
        self.indptr = self.indices = None
        self.choice = None
        self._subs = {}

    def matches(self, M) -> bool:
        def same(a, b):
            return a is b or (b is not None and a.shape == b.shape and (_same_memory(a, b)
                                                                         or np.array_equal(a, b)))

        return same(M.indptr, self.indptr) and same(M.indices, self.indices)

    def reset(self, M):
        self.indptr, self.indices, self.choice, self._subs = M.indptr, M.indices, None, {}

    def sub(self, M, rows, cols, name) -> sp.csr_matrix:
        if name not in self._subs:
            probe = sp.csr_matrix((np.arange(1, M.nnz + 1, dtype=np.float64), M.indices, M.indptr),
                                  shape=M.shape)
            s = probe[rows][:, cols].tocsr()
            self._subs[name] = (s.data.astype(np.int64) - 1, s.indices, s.indptr, s.shape)
        take, indices, indptr, shape = self._subs[name]
        return sp.csr_matrix((M.data[take], indices, indptr), shape=shape)


@dataclass
class _Level:
    b_local: np.ndarray  # positions (in this level's ordering) of the eliminated block
    rest_local: np.ndarray  # positions of what remains, in the next level's order
    d: np.ndarray  # diagonal of the eliminated block
    W: sp.csr_matrix  # D^{-1} C, shape (len(b_local), len(rest_local))


def _choose_block(M, cur_blocks: np.ndarray, n_blocks: int, plan: SchurPlan | None,
                  min_eliminate: int):
    """The facet block to eliminate next, ``(k, positions)``: the plan's, or the largest block
    (of at least ``min_eliminate``, leaving something) whose sub-matrix is diagonal; None."""
    sizes = np.bincount(cur_blocks, minlength=n_blocks)
    chosen = plan.choice if plan is not None else None
    if chosen is not None and np.all(M.diagonal()[chosen[1]] != 0):
        return chosen  # a zero pivot: the search below decides, as without a plan
    for k in np.argsort(-sizes, kind="stable"):
        if sizes[k] < min_eliminate or len(cur_blocks) - sizes[k] == 0:
            break
        pos = np.flatnonzero(cur_blocks == k)
        sub = M[pos][:, pos]
        if sub.nnz - np.count_nonzero(sub.diagonal()) == 0:
            return (k, pos)
    return None


def _eliminate(M, chosen, plan: SchurPlan | None, cur: np.ndarray, n: int):
    """Eliminate the diagonal block ``chosen`` of M: the level (D, W = D^-1 C) and the Schur
    complement ``E - C^T D^-1 C`` (sparse, or dense by BLAS for a small dense remainder)."""
    _, b_local = chosen
    mask = np.ones(M.shape[0], dtype=bool)
    mask[b_local] = False
    rest_local = np.flatnonzero(mask)
    d = np.asarray(M.diagonal()[b_local]).ravel()
    if not np.all(d > 0):
        bad = cur[b_local][~(d > 0)]
        vec = np.zeros(n)
        vec[bad[0]] = 1.0
        raise NotPositiveDefinite(f"{len(bad)} parameter(s) carry no information", null_vector=vec)
    if plan is not None and plan.choice is not chosen:
        plan.choice, plan._subs = chosen, {}
    take = plan.sub if plan is not None else _sub
    C = take(M, b_local, rest_local, "C")
    W = C.copy()  # D^{-1} C: each row scaled (no sparse product)
    W.data *= np.repeat(1.0 / d, np.diff(W.indptr))
    cells = len(b_local) * len(rest_local)
    if cells <= _DENSE_PRODUCT_CELLS and C.nnz >= 0.25 * cells:
        # a small remainder (the everyday design: a few dozen models, judges, items):
        # C^T D^{-1} C by BLAS, ~10x faster than a sparse product with C's 1.5 M entries
        # (dense W scaled from dense C: the same products as W's entries)
        Cd = C.toarray()
        S = take(M, rest_local, rest_local, "E").toarray() - Cd.T @ (Cd * (1.0 / d)[:, None])
    else:
        S = take(M, rest_local, rest_local, "E") - (C.T @ W)
    return _Level(b_local, rest_local, d, W), sp.csr_matrix(S)


class BlockSchurSolver:
    """Factorise a symmetric positive-definite matrix with diagonal facet blocks.

    Parameters
    ----------
    H
        Symmetric positive-definite matrix (scipy sparse or dense), shape (n, n).
    blocks
        A partition of ``range(n)`` into index arrays, one per facet. A block whose sub-matrix is
        diagonal is a candidate for exact elimination.
    dense_max
        The largest remainder factorised densely; beyond it :class:`MemoryError` is raised.
    """

    def __init__(
        self,
        H,
        blocks: list[np.ndarray],
        *,
        min_eliminate: int = 64,
        dense_max: int = 8000,
        plan: SchurPlan | None = None,
    ):
        M = sp.csr_matrix(H, dtype=np.float64)
        # a Newton fit factorises matrices of one sparsity pattern again and again: the first
        # elimination's choice and sub-matrix patterns are then found once (``plan``)
        if plan is not None and not plan.matches(M):
            plan.reset(M)
        first = plan
        n = M.shape[0]
        self.n = n
        cur = np.arange(n)  # global indices in the current level's order
        block_of = np.empty(n, dtype=np.int64)
        for k, b in enumerate(blocks):
            block_of[np.asarray(b, dtype=np.int64)] = k
        self.levels: list[_Level] = []
        self._order: list[np.ndarray] = []  # global indices of each level's eliminated block

        while True:
            chosen = _choose_block(M, block_of[cur], len(blocks), first, min_eliminate)
            if chosen is None:
                break
            level, M = _eliminate(M, chosen, first, cur, n)
            self.levels.append(level)
            self._order.append(cur[level.b_local])
            cur = cur[level.rest_local]
            first = None
        self._factorise_remainder(M, cur, dense_max)

    def _factorise_remainder(self, M, cur: np.ndarray, dense_max: int) -> None:
        """Cholesky of what no facet elimination removed (dense), or why it cannot be done."""
        r = len(cur)
        if r > dense_max:
            raise MemoryError(
                f"the part of the design that cannot be eliminated facet by facet has {r} "
                f"parameters (limit {dense_max})"
            )
        self._dense_idx = cur
        T = M.toarray() if sp.issparse(M) else np.asarray(M)
        T = 0.5 * (T + T.T)
        self._T = T
        try:
            self._chol = sla.cho_factor(T, lower=True, check_finite=False) if r else None
            if r:
                # cho_factor does not always raise on a numerically singular matrix; the factor's
                # diagonal holds square roots of the pivots: a pivot ratio below 1e-12 means a
                # direction the data do not determine
                diag = np.diag(self._chol[0])
                if np.any(~np.isfinite(diag)) or diag.min() <= 1e-6 * max(diag.max(), 1e-300):
                    raise np.linalg.LinAlgError("tiny pivot")
        except np.linalg.LinAlgError:
            _, V = np.linalg.eigh(T)
            raise NotPositiveDefinite(
                "the information matrix is singular: some parameters are not identified",
                null_vector=self._back_substitute(V[:, 0]),
            ) from None
        self._Tinv: np.ndarray | None = None

    def _back_substitute(self, v_dense: np.ndarray) -> np.ndarray:
        """Extend a null vector of the dense remainder to one of H (x_b = -W x_rest per level)."""
        x = v_dense
        for L in reversed(self.levels):
            full = np.empty(len(L.b_local) + len(L.rest_local))
            full[L.rest_local] = x
            full[L.b_local] = -(L.W @ x)
            x = full
        return x

    # ------------------------------------------------------------------ solving
    def _dense_solve(self, g: np.ndarray) -> np.ndarray:
        if len(self._dense_idx) == 0:
            return g
        return sla.cho_solve(self._chol, g, check_finite=False)

    def _solve_level(self, level: int, g: np.ndarray) -> np.ndarray:
        if level == len(self.levels):
            return self._dense_solve(g)
        L = self.levels[level]
        g_b = g[L.b_local]
        g_r = g[L.rest_local]
        x_r = self._solve_level(level + 1, g_r - L.W.T @ g_b)
        dd = L.d if g.ndim == 1 else L.d[:, None]
        x_b = g_b / dd - L.W @ x_r
        x = np.empty_like(g)
        x[L.b_local] = x_b
        x[L.rest_local] = x_r
        return x

    def solve(self, g: np.ndarray) -> np.ndarray:
        """Return ``H^{-1} g`` for a vector or a matrix of right-hand sides."""
        g = np.asarray(g, dtype=np.float64)
        return self._solve_level(0, g)

    # ----------------------------------------------------------- inverse diagonal
    def _Tinv_(self) -> np.ndarray:
        if self._Tinv is None:
            r = len(self._dense_idx)
            self._Tinv = self._dense_solve(np.eye(r)) if r else np.zeros((0, 0))
        return self._Tinv

    def _quad(self, level: int, Z) -> np.ndarray:
        """Row-wise ``z^T (H_level)^{-1} z`` for the rows of Z (sparse or dense)."""
        m = Z.shape[0]
        if level == len(self.levels):
            Tinv = self._Tinv_()
            out = np.empty(m)
            r = max(Tinv.shape[0], 1)
            step = max(1, 4_000_000 // r)
            for s in range(0, m, step):
                z = Z[s : s + step]
                z = z.toarray() if sp.issparse(z) else np.asarray(z)
                out[s : s + step] = np.einsum("ij,ij->i", z @ Tinv, z)
            return out
        L = self.levels[level]
        if sp.issparse(Z):
            Z = sp.csc_matrix(Z)
            A = Z[:, L.b_local]
            U = Z[:, L.rest_local]
            first = np.asarray(A.multiply(A) @ (1.0 / L.d)).ravel()
            Znext = sp.csr_matrix(U - A @ L.W)
        else:
            A = Z[:, L.b_local]
            U = Z[:, L.rest_local]
            first = (A * A) @ (1.0 / L.d)
            Znext = U - np.asarray((L.W.T @ A.T).T)
        return first + self._quad(level + 1, Znext)

    se_method = "exact (nested Schur complements, remainder factorised densely)"

    def inverse_block(self, idx: np.ndarray, R: np.ndarray | None,
                      consume: bool = False) -> np.ndarray:
        """``(H^{-1})[idx][:, idx] @ R`` (``R=None``: the block itself), by solves (a new
        array: ``consume`` is accepted for the solvers' common interface)."""
        idx = np.asarray(idx, dtype=np.int64)
        G = np.zeros((self.n, len(idx) if R is None else R.shape[1]))
        G[idx] = np.eye(len(idx)) if R is None else R
        return self.solve(G)[idx]

    def diag_inv(self, want: np.ndarray | None = None) -> np.ndarray:
        """The diagonal of ``H^{-1}``, exactly, without forming ``H^{-1}`` (all of it: ``want``
        is accepted for the solvers' common interface)."""
        out = np.empty(self.n)
        for level, L in enumerate(self.levels):
            idx = self._order[level]
            out[idx] = 1.0 / L.d + self._quad(level + 1, L.W)
        if len(self._dense_idx):
            out[self._dense_idx] = np.diag(self._Tinv_())
        return out
