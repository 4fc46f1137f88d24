"""Newton systems too large to factorise densely: preconditioned conjugate gradients on the
Schur complement, with memory linear in the data.

The Hessian (in the free coordinates) is ``H = [[D, C], [C^T, E]]`` with ``D`` the diagonal block
of the largest facet. ``H x = g`` is solved by eliminating ``D`` exactly and running preconditioned
CG on ``S = E - C^T D^{-1} C``, which is never formed: ``S v`` costs two products with ``C``
(a sparse matrix, plus dense arrays for densely crossed facet pairs, see
:class:`~irtpeer.estimators._likelihood.Evaluation`). The preconditioner is the diagonal of ``S``
per facet (exactly, without forming ``S``) and the exact inverse of the small blocks (thresholds,
small facets). Many right-hand sides are solved together (one matrix product per iteration).

Standard errors need the diagonal of ``H^{-1}``. Two routes give it exactly: form ``S`` densely
(its side at most :data:`DENSE_S_MAX`), in place, a block of ``C``'s rows and of ``S``'s columns
at a time, factorise and invert it in place (the remainder's inverse diagonal is then exact, and
the eliminated facet's ``1/d + diag(W S^{-1} W^T)``, ``W = D^{-1} C``, follows); or one CG solve
per element asked for, batched. :func:`se_route` picks the cheaper in multiply-adds.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import blas, cho_solve, lapack

from ._blocksolve import NotPositiveDefinite

__all__ = ["DENSE_S_MAX", "SE_FREE_FLOPS", "IterativeSchurSolver", "se_route"]

#: Largest Schur complement formed densely (for exact standard errors): 20,000 -> 3.2 GB.
DENSE_S_MAX = 20_000
#: Multiply-adds spent without being asked on the eliminated facet's exact standard errors.
SE_FREE_FLOPS = 5e9
#: Multiply-adds spent, without being asked, on the standard errors of every element (the
#: dense route for all of them); beyond it only the facets asked for (models by default) get se.
FORM_S_FLOPS = 4e12
#: CG iterations assumed per standard-error solve (rtol 1e-10) before any solve was seen.
SE_CG_ITERS = 30
_CHUNK_CELLS = 1 << 24  # elements of a dense chunk of C (128 MB)
_BLOCK_CELLS = 1 << 23  # elements of a temporary block of S (64 MB)
_SMALL_BLOCK = 64  # remainder blocks up to this size get an exact block preconditioner


def se_route(n_elim: int, n_rest: int, want_rest: int, want_elim: int, product: float,
             iters: float) -> str:
    """``"dense"`` or ``"iterative"``: the cheaper exact route to the inverse diagonal entries
    asked for, in multiply-adds.

    Dense: form ``S`` (``n_elim n_rest^2 / 2``, its lower triangle), factorise and invert it
    (``n_rest^3``), and, if eliminated elements are asked for, ``n_elim n_rest^2`` for their
    quadratic forms. Iterative: ``iters`` products with ``S`` (``product`` multiply-adds per
    right-hand side) for each element asked for. Dense only while ``S`` fits
    (``n_rest <= DENSE_S_MAX``).
    """
    if n_rest > DENSE_S_MAX:
        return "iterative"
    nr2 = float(n_rest) ** 2
    dense = 0.5 * n_elim * nr2 + n_rest * nr2 + (n_elim * nr2 if want_elim else 0.0)
    iterative = float(iters) * float(product) * (want_rest + want_elim)
    return "dense" if dense <= iterative else "iterative"


def _mirror_lower(A: np.ndarray, tile: int = 256) -> None:
    """Copy the lower triangle of a square array onto its upper one, tile by tile (no temporary
    of A's size; a transposed copy of tall blocks missed the cache: 151 -> 57 ms at 6,000)."""
    n = A.shape[0]
    for j in range(0, n, tile):
        k = min(j + tile, n)
        D = A[j:k, j:k]
        D[...] = np.tril(D) + np.tril(D, -1).T
        for i in range(k, n, tile):
            A[j:k, i : i + tile] = A[i : i + tile, j:k].T


def _host(a) -> np.ndarray:
    """A dense block or chunk as a NumPy array (a torch tensor on a GPU is copied over)."""
    return a.cpu().numpy() if isinstance(a, torch.Tensor) else a


def _beside(a, like):
    """``a`` (NumPy) where ``like`` lives: a torch tensor on its device, else as it is."""
    return torch.as_tensor(a, device=like.device) if isinstance(like, torch.Tensor) else a


def _check_factor(diag, info) -> None:
    """A Cholesky factor whose diagonal collapses marks a singular information matrix."""
    dg = np.asarray(diag) if len(diag) else np.ones(1)
    if info or np.any(~np.isfinite(dg)) or dg.min() <= 1e-6 * max(dg.max(), 1e-300):
        raise NotPositiveDefinite("the information matrix is singular")


class _HostCholesky:
    """``S = U^T U`` by LAPACK in S's own storage (no copy: S is 1.1 GB at 11,785 models).

    ``S`` comes C-ordered with both triangles; its lower triangle in C order is the upper one in
    Fortran order, which ``potrf``/``potri`` work on in place. torch's ``cholesky_ex``, even with
    ``out=``, works on a copy of S's size."""

    def __init__(self, S: torch.Tensor):
        self.U, info = lapack.dpotrf(S.numpy().T, lower=0, clean=0, overwrite_a=1)
        _check_factor(np.diag(self.U), info)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        return cho_solve((self.U, False), rhs, check_finite=False)

    def column_norms(self, WT: np.ndarray) -> np.ndarray:
        """``diag(W S^-1 W^T)`` from ``W^T`` (C order, overwritten): the squared row norms of
        ``W U^-1``, solved from the right on ``W``, which is ``W^T``'s Fortran-ordered view."""
        WT = _host(WT)
        Y = blas.dtrsm(1.0, self.U, WT.T, side=1, lower=0, trans_a=0, overwrite_b=1)
        return np.einsum("ij,ij->i", Y, Y)

    def inverse(self) -> np.ndarray:
        """``S^-1`` in the factor's own storage (the factor is consumed)."""
        X, info = lapack.dpotri(self.U, lower=0, overwrite_c=1)
        self.U = None
        if info:
            raise NotPositiveDefinite("the information matrix is singular")
        A = X.T  # C order (S's own storage); its lower triangle holds S^{-1}
        _mirror_lower(A)
        return A


class _DeviceCholesky:
    """The same on a torch device (a GPU): S factorised, solved with and inverted there; only
    right-hand sides, norms and the inverse cross to the host."""

    def __init__(self, S: torch.Tensor):
        self.U, info = torch.linalg.cholesky_ex(S, upper=True)
        _check_factor(torch.diagonal(self.U).cpu().numpy(), int(info))

    def _dev(self, a) -> torch.Tensor:
        return torch.as_tensor(a, device=self.U.device)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        R = self._dev(rhs if rhs.ndim == 2 else rhs[:, None])
        X = torch.cholesky_solve(R, self.U, upper=True).cpu().numpy()
        return X if rhs.ndim == 2 else X[:, 0]

    def column_norms(self, WT: np.ndarray) -> np.ndarray:
        Y = torch.linalg.solve_triangular(self.U.mT, self._dev(WT), upper=False)
        return (Y * Y).sum(0).cpu().numpy()

    def inverse(self) -> np.ndarray:
        X = torch.cholesky_inverse(self.U, upper=True)
        self.U = None
        return X.cpu().numpy()


class IterativeSchurSolver:
    """Solve with a facet-structured SPD matrix given as a sparse part plus dense facet pairs.

    Parameters
    ----------
    Hs
        The sparse part (scipy), shape (n, n), free coordinates, penalty included.
    dense
        ``(rows, cols, B)``: ``H[rows[i], cols[j]] += B[i, j]`` (and symmetrically) for
        ``rows[i] >= 0`` and ``cols[j] >= 0`` (``-1`` marks an element that is not free).
        ``B`` is a NumPy array, or a torch tensor left on the GPU that computed it: products
        with it run there and only vectors cross.
    blocks
        A partition of ``range(n)`` by facet (and thresholds).
    rtol
        Relative residual at which CG stops (``solve`` may pass its own).
    device
        Where the dense Schur complement is formed, factorised and inverted: ``None`` on the
        host by LAPACK in place; a torch device (a GPU) by torch there, the chunks of ``C``
        sent to it as they are built.
    """

    def __init__(self, Hs, dense, blocks, *, rtol: float = 1e-10, maxiter: int = 1000,
                 device: torch.device | str | None = None):
        Hs = sp.csr_matrix(Hs, dtype=np.float64)
        n = Hs.shape[0]
        self.n, self.rtol, self.maxiter = n, rtol, maxiter
        self.device = None if device is None else torch.device(device)
        self.matvecs = 0  # products with S (one per right-hand side and iteration)
        k = self._pick(Hs, blocks)
        self.be = np.sort(np.asarray(blocks[k], dtype=np.int64))
        mask = np.ones(n, dtype=bool)
        mask[self.be] = False
        self.rest = np.flatnonzero(mask)
        self.r_blocks = [np.searchsorted(self.rest, np.sort(b)) for j, b in enumerate(blocks)
                         if j != k and len(b)]
        d = np.asarray(Hs.diagonal()[self.be]).ravel()
        if not np.all(d > 0):
            vec = np.zeros(n)
            vec[self.be[np.flatnonzero(~(d > 0))[0]]] = 1.0
            raise NotPositiveDefinite("a parameter carries no information", null_vector=vec)
        self.d, self.dinv = d, 1.0 / d
        self.Cs = Hs[self.be][:, self.rest].tocsr()
        self.CsT = self.Cs.T.tocsr()
        self.Hrr = Hs[self.rest][:, self.rest].tocsr()
        self._split_dense(dense, n)
        self.product = self._product_cost()
        self._setup_preconditioner()
        self._chol = None  # the Cholesky factor of S (_HostCholesky or _DeviceCholesky)
        self._Sinv = None  # S^{-1} (numpy; on the host, in S's own storage)
        self._seen = None  # (CG iterations, rtol) of the last solve

    # ------------------------------------------------------------------ structure
    @staticmethod
    def _pick(Hs, blocks) -> int:
        """The largest block whose sub-matrix is diagonal (it is eliminated exactly)."""
        for k in np.argsort([-len(b) for b in blocks], kind="stable"):
            b = np.asarray(blocks[k], dtype=np.int64)
            sub = Hs[b][:, b]
            if sub.nnz == np.count_nonzero(sub.diagonal()) and len(b) < Hs.shape[0]:
                return int(k)
        raise ValueError("no facet block is diagonal: nothing to eliminate")

    def _split_dense(self, dense, n):
        loc_e = -np.ones(n, dtype=np.int64)
        loc_e[self.be] = np.arange(len(self.be))
        loc_r = -np.ones(n, dtype=np.int64)
        loc_r[self.rest] = np.arange(len(self.rest))
        self.cd, self.rd = [], []  # pieces of C (eliminated x remainder), of E (remainder pairs)
        for rows, cols, B in dense:
            rs, cs = np.flatnonzero(rows >= 0), np.flatnonzero(cols >= 0)
            if len(rs) == 0 or len(cs) == 0:
                continue
            if loc_e[rows[rs[0]]] >= 0:
                self.cd.append((B, rs, loc_e[rows[rs]], cs, loc_r[cols[cs]]))
            elif loc_e[cols[cs[0]]] >= 0:
                self.cd.append((B.T, cs, loc_e[cols[cs]], rs, loc_r[rows[rs]]))
            else:
                self.rd.append((B, rs, loc_r[rows[rs]], cs, loc_r[cols[cs]]))

    def _product_cost(self) -> float:
        """Multiply-adds of one product with ``S`` (per right-hand side)."""
        cd = sum(B.shape[0] * B.shape[1] for B, *_ in self.cd)
        rd = sum(B.shape[0] * B.shape[1] for B, *_ in self.rd)
        return float(self.Hrr.nnz + 2 * (self.Cs.nnz + cd + rd) + len(self.be))

    # ------------------------------------------------------------------ products
    @staticmethod
    def _apply(B, sel_in, dst_in, sel_out, dst_out, X, out):
        full = np.zeros((B.shape[1],) + X.shape[1:])
        full[sel_in] = X[dst_in]
        out[dst_out] += _host(B @ _beside(full, B))[sel_out]

    def _C(self, Xr):
        out = np.asarray(self.Cs @ Xr, dtype=np.float64)
        for B, es, ed, rs, rd in self.cd:
            self._apply(B, rs, rd, es, ed, Xr, out)
        return out

    def _CT(self, Xe):
        out = np.asarray(self.CsT @ Xe, dtype=np.float64)
        for B, es, ed, rs, rd in self.cd:
            self._apply(B.T, es, ed, rs, rd, Xe, out)
        return out

    def _E(self, Xr):
        out = np.asarray(self.Hrr @ Xr, dtype=np.float64)
        for B, rs, rdst, cs, cdst in self.rd:
            self._apply(B, cs, cdst, rs, rdst, Xr, out)
            self._apply(B.T, rs, rdst, cs, cdst, Xr, out)
        return out

    def _S(self, Xr):
        self.matvecs += 1 if Xr.ndim == 1 else Xr.shape[1]
        dv = self.dinv if Xr.ndim == 1 else self.dinv[:, None]
        return self._E(Xr) - self._CT(dv * self._C(Xr))

    def _dense_CT_cols(self, s, e):
        """Columns s:e of ``C^T`` (remainder x eliminated-facet local order) as a fresh dense
        C-ordered array. A dense piece is usually kept as the transposed view of an engine's
        block whose rows are the remainder, so these columns are contiguous runs of its rows:
        no transposing copy (at 6,000 x 30,000 that copy took 1.5-1.9 s per pass)."""
        nr = len(self.rest)
        part = self.Cs[s:e]
        out = part.T.toarray() if part.nnz else np.zeros((nr, e - s))
        if self.cd:
            out = _beside(out, self.cd[0][0])  # built where the dense pieces are
        for B, es, ed, rs, rd in self.cd:
            lo, hi = np.searchsorted(ed, [s, e])
            if hi <= lo:
                continue
            rows = es[lo:hi]
            sub = B[rows[0] : rows[-1] + 1]
            if len(rows) != len(sub):
                sub = sub[rows - rows[0]]
            dst = ed[lo:hi] - s
            if len(rs) == B.shape[1] and np.array_equal(rd, np.arange(nr)):
                if len(dst) == e - s:
                    out += sub.T
                else:
                    out[:, dst] += sub.T
            else:
                out[np.ix_(rd, dst)] += sub[:, rs].T
        return out

    def _chunks(self):
        step = max(1, _CHUNK_CELLS // max(len(self.rest), 1))
        for s in range(0, len(self.be), step):
            yield s, min(s + step, len(self.be))

    # ------------------------------------------------------------- preconditioner
    def _setup_preconditioner(self):
        nr = len(self.rest)
        diag = np.asarray(self.Hrr.diagonal()).ravel().copy()
        diag -= np.asarray(self.Cs.multiply(self.Cs).T @ self.dinv).ravel()
        # a dense piece's share, sum_j C_ji^2 / d_j, is left out: with the hundreds of partners
        # that make a pair dense it is under 1% of the diagonal (measured on 2,000 x 5,000: the
        # same CG products with and without it, for a pass over the block saved per iteration)
        if not np.all(diag > 0):
            vec = np.zeros(self.n)
            vec[self.rest[np.flatnonzero(~(diag > 0))[0]]] = 1.0
            raise NotPositiveDefinite("a parameter carries no information", null_vector=vec)
        self._pdiag = 1.0 / diag
        self._psmall = []
        for b in self.r_blocks:
            if 1 < len(b) <= _SMALL_BLOCK:
                E = np.zeros((nr, len(b)))
                E[b, np.arange(len(b))] = 1.0
                Sb = self._S(E)[b]
                Sb = 0.5 * (Sb + Sb.T)
                try:
                    self._psmall.append((b, np.linalg.inv(Sb)))
                except np.linalg.LinAlgError:
                    pass
        self.matvecs = 0

    def _precondition(self, R):
        Z = R * (self._pdiag if R.ndim == 1 else self._pdiag[:, None])
        for b, inv in self._psmall:
            Z[b] = inv @ R[b]
        return Z

    # ------------------------------------------------------------------ solving
    def _pcg(self, Bm, rtol):
        """Solve ``S X = Bm`` (columns independently) by preconditioned CG."""
        vec = Bm.ndim == 1
        Bm = Bm.reshape(len(self.rest), -1)
        X = np.zeros_like(Bm)
        R = Bm.copy()
        Z = self._precondition(R)
        P = Z.copy()
        rz = np.einsum("ij,ij->j", R, Z)
        target = rtol * np.linalg.norm(Bm, axis=0)
        it = 0
        while True:
            act = np.flatnonzero(np.linalg.norm(R, axis=0) > target)
            if len(act) == 0:
                break
            if it >= self.maxiter:
                raise NotPositiveDefinite(
                    f"conjugate gradients did not converge in {self.maxiter} iterations"
                )
            Pa = P[:, act]
            SP = self._S(Pa)
            alpha = rz[act] / np.einsum("ij,ij->j", Pa, SP)
            if np.any(~(alpha > 0)):
                raise NotPositiveDefinite("the information matrix is not positive definite")
            X[:, act] += alpha * Pa
            R[:, act] -= alpha * SP
            Za = self._precondition(R[:, act])
            rz_new = np.einsum("ij,ij->j", R[:, act], Za)
            P[:, act] = Za + (rz_new / rz[act]) * Pa
            rz[act] = rz_new
            it += 1
        self.last_iterations = it
        self._seen = (it, rtol)
        return X[:, 0] if vec else X

    def solve(self, g, rtol: float | None = None):
        """Return ``H^{-1} g`` for a vector or a matrix of right-hand sides."""
        g = np.asarray(g, dtype=np.float64)
        col = (lambda v: v) if g.ndim == 1 else (lambda v: v[:, None])
        g_e, g_r = g[self.be], g[self.rest]
        rhs = g_r - self._CT(col(self.dinv) * g_e)
        if self._Sinv is not None:
            x_r = self._Sinv @ rhs
        elif self._chol is not None:
            x_r = self._chol.solve(rhs)
        else:
            x_r = self._pcg(rhs, self.rtol if rtol is None else rtol)
        x = np.empty_like(g)
        x[self.be] = col(self.dinv) * (g_e - self._C(x_r))
        x[self.rest] = x_r
        return x

    # ---------------------------------------------------------- dense remainder
    def dense_affordable(self) -> bool:
        """Whether the standard errors of every element (the dense route) fit the budget
        :data:`FORM_S_FLOPS` spent without being asked."""
        nr, ne = len(self.rest), len(self.be)
        return nr <= DENSE_S_MAX and 1.5 * ne * float(nr) ** 2 + float(nr) ** 3 <= FORM_S_FLOPS

    def se_iterations(self) -> float:
        """CG iterations expected for a solve to rtol 1e-10: those of the last solve scaled by
        the digits asked for (CG gains digits at a steady rate), else :data:`SE_CG_ITERS`."""
        if self._seen is None or self._seen[0] == 0 or not 0 < self._seen[1] < 1:
            return float(SE_CG_ITERS)
        it, rtol = self._seen
        return max(1.0, it * np.log(1e-10) / np.log(rtol))

    def route(self, want_rest: int, want_elim: int) -> str:
        """The route (:func:`se_route`) for that many remainder / eliminated elements."""
        if self._Sinv is not None:
            return "dense"  # already paid for
        return se_route(len(self.be), len(self.rest), want_rest, want_elim, self.product,
                        self.se_iterations())

    def _form_S(self) -> torch.Tensor:
        """``S`` densely, in place: a block of ``C``'s rows (:data:`_CHUNK_CELLS`) at a time.
        On the host its lower triangle by BLAS, a block of ``S``'s columns (:data:`_BLOCK_CELLS`)
        at a time, then mirrored (memory: ``S`` plus one chunk of ``C`` and one block of ``S``);
        on a device whole products, each chunk sent there as it is built."""
        nr = len(self.rest)
        S = self.Hrr.toarray()
        for B, rs, rdst, cs, cdst in self.rd:
            blk = _host(B[np.ix_(rs, cs)])
            S[np.ix_(rdst, cdst)] += blk
            S[np.ix_(cdst, rdst)] += blk.T
        dev = self.device
        St = torch.from_numpy(S) if dev is None else torch.from_numpy(S).to(dev)
        bs = max(1, _BLOCK_CELLS // max(nr, 1))
        root = np.sqrt(self.dinv)  # S -= (C^T D^-1/2)(D^-1/2 C): one scaled chunk, no copy
        for s, e in self._chunks():
            CT = self._dense_CT_cols(s, e)
            CT *= _beside(root[None, s:e], CT)
            if dev is not None:
                Ct = torch.as_tensor(CT, device=dev)
                St.sub_(Ct @ Ct.T)
                continue
            Ct = torch.as_tensor(_host(CT))
            for j in range(0, nr, bs):
                k = min(j + bs, nr)
                St[j:, j:k].sub_(Ct[j:] @ Ct[j:k].T)
            del Ct, CT
        if dev is None:
            _mirror_lower(S)
        return St

    def factorise_dense(self):
        """Form ``S`` and factorise it in place (then solves are direct)."""
        if self._chol is None and self._Sinv is None:
            S = self._form_S()
            self._chol = (_HostCholesky if self.device is None else _DeviceCholesky)(S)

    def _S_inverse(self) -> np.ndarray:
        """``S^{-1}`` on the host (in the factor's own storage there: LAPACK ``potri`` in place;
        torch's ``cholesky_inverse`` needs a temporary of S's size and was slower on 2 busy
        cores)."""
        if self._Sinv is None:
            self.factorise_dense()
            factor, self._chol = self._chol, None
            self._Sinv = factor.inverse()
        return self._Sinv

    def _elim_diag_from_factor(self) -> np.ndarray:
        """Diagonal of ``H^{-1}`` over the eliminated facet, ``d^-1 + diag(W S^-1 W^T)`` with
        ``W = D^-1 C``, from the Cholesky factor ``S = U^T U``: the row norms of ``W U^-1``, one
        triangular solve per chunk of rows (half the multiply-adds of ``W S^-1`` by GEMM)."""
        self.factorise_dense()
        out = np.empty(len(self.be))
        for s, e in self._chunks():
            WT = self._dense_CT_cols(s, e)  # a fresh array: scaled and solved in place
            WT *= _beside(self.dinv[None, s:e], WT)
            out[s:e] = self.dinv[s:e] + self._chol.column_norms(WT)
        return out

    # ------------------------------------------------------------ inverse diagonal
    def diag_inv(self, want: np.ndarray | None = None, route: str | None = None) -> np.ndarray:
        """Diagonal of ``H^{-1}``: exact for the positions in ``want`` (all if None) and wherever
        it is cheap; NaN elsewhere. ``route`` (``"dense"``/``"iterative"``) forces a route,
        else the cheaper is taken (:meth:`route`); ``self.se_method`` says which."""
        want = np.ones(self.n, dtype=bool) if want is None else np.asarray(want, dtype=bool)
        out = np.full(self.n, np.nan)
        nr, ne = len(self.rest), len(self.be)
        route = route or self.route(int(want[self.rest].sum()), int(want[self.be].sum()))
        if route == "dense":
            elim = want[self.be].any() or ne * float(nr) ** 2 <= SE_FREE_FLOPS
            if elim and self._Sinv is None:  # from the factor, before S^-1 overwrites it
                out[self.be] = self._elim_diag_from_factor()
            Sinv = self._S_inverse()
            out[self.rest] = np.diag(Sinv)
            if elim and np.isnan(out[self.be]).any():  # S^-1 was already formed
                dev = self.device or torch.device("cpu")
                St = torch.from_numpy(Sinv).to(dev)
                for s, e in self._chunks():
                    WT = torch.as_tensor(self._dense_CT_cols(s, e), device=dev)
                    WT *= torch.as_tensor(self.dinv[None, s:e], device=dev)
                    out[self.be[s:e]] = self.dinv[s:e] + ((St @ WT) * WT).sum(0).cpu().numpy()
            self.se_method = f"exact (Schur complement of {nr} parameters formed densely)"
            return out
        # one CG solve per element asked for, batched
        r_want = np.flatnonzero(want[self.rest])
        for s in range(0, len(r_want), 256):
            cols = r_want[s : s + 256]
            E = np.zeros((nr, len(cols)))
            E[cols, np.arange(len(cols))] = 1.0
            out[self.rest[cols]] = self._pcg(E, 1e-10)[cols, np.arange(len(cols))]
        e_want = np.flatnonzero(want[self.be])
        for s in range(0, len(e_want), 256):
            rows = e_want[s : s + 256]
            Wt = np.zeros((ne, len(rows)))
            Wt[rows, np.arange(len(rows))] = self.dinv[rows]
            Wt = self._CT(Wt)  # columns w_j = C^T e_j / d_j
            out[self.be[rows]] = self.dinv[rows] + np.einsum("ij,ij->j", Wt, self._pcg(Wt, 1e-10))
        self.se_method = "exact (iterative solves, one per element asked for)"
        return out

    def inverse_block(self, idx: np.ndarray, R: np.ndarray | None,
                      consume: bool = False) -> np.ndarray:
        """``(H^{-1})[idx][:, idx] @ R`` (``R=None``: the block itself, read-only); from the
        dense ``S^{-1}`` when ``idx`` lies in the remainder and that route is the cheaper, else
        by solves. ``consume``: the caller is the solver's last user; when the block is all of
        ``S^{-1}`` it is handed over, writable, instead of copied (1.1 GB at 11,785 models)."""
        idx = np.asarray(idx, dtype=np.int64)
        loc = np.minimum(np.searchsorted(self.rest, idx), max(len(self.rest) - 1, 0))
        inside = len(self.rest) > 0 and np.array_equal(self.rest[loc], idx)
        if inside and self.route(len(idx), 0) == "dense":
            Sinv = self._S_inverse()
            if R is None and np.array_equal(loc, np.arange(len(self.rest))):
                if consume:
                    self._Sinv = None  # later solves iterate (CG)
                    return Sinv
                block = Sinv.view()  # all of S^{-1}: no copy of a GB-sized matrix
                block.flags.writeable = False
                return block
            block = Sinv[np.ix_(loc, loc)]
            return block if R is None else block @ R
        m = len(idx) if R is None else R.shape[1]
        out = np.empty((len(idx), m))
        for s in range(0, m, 256):  # batches of right-hand sides: memory n x 256, not n x m
            e = min(s + 256, m)
            G = np.zeros((self.n, e - s))
            if R is None:
                G[idx[s:e], np.arange(e - s)] = 1.0
            else:
                G[idx] = R[:, s:e]
            out[:, s:e] = self.solve(G)[idx]
        return out
