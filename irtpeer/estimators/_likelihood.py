"""Joint log-likelihood of a many-facet Rasch model, its gradient and its Hessian, in torch.

Parameters live in one vector laid out as ``[theta | b_1 | ... | b_F | tau]``: persons, then each
facet's elements, then thresholds (none for a dichotomous scale, ``K`` for the Andrich rating
scale, ``L_r * K`` for a partial-credit facet ``r``, element-major). For an observation

    eta = theta_p - sum_f b_{f, e_f}
    log P(x = k) = k * eta - sum_{j <= k} tau_j - log Z.

One pass over the observations (in chunks, on CPU or CUDA, float64) gives the negative
log-likelihood, its gradient and the Hessian assembled as a scipy sparse matrix whose
within-facet blocks are diagonal (each observation touches one element of each facet).

A pair of large facets crossed densely (a leaderboard: thousands of models x tens of thousands of
items, most cells observed) is kept as a dense array ``Evaluation.dense`` instead: one float64
per cell, filled in place, with no index arrays and no sparse assembly; the iterative solver
multiplies with it by BLAS (:mod:`irtpeer.estimators._cg`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from .._design import FacetData

__all__ = ["Evaluation", "FacetData", "GridLikelihoodEngine", "LikelihoodEngine", "make_engine"]

_DENSE_PAIR_LIMIT = 1 << 26  # pair blocks smaller than this are counted densely with bincount
#: A facet pair with at least this many cells, at least BLOCK_MIN_FILL of them observed and at
#: most BLOCK_MAX_CELLS cells, is kept as a dense block (``Evaluation.dense``).
BLOCK_MIN_CELLS = 1 << 20
BLOCK_MIN_FILL = 0.2
BLOCK_MAX_CELLS = 1 << 29


def _read_only(a: np.ndarray, dtype, device) -> torch.Tensor:
    """``torch.as_tensor`` without copying a read-only array (the scores of a copy-on-write
    DataFrame): the tensor is only ever read, so torch's warning about writing does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(a, dtype=dtype, device=device)


@dataclass
class Evaluation:
    f: float  # negative log-likelihood
    g: np.ndarray | None = None  # gradient of f
    H: sp.csr_matrix | None = None  # Hessian of f (= Fisher information), less the dense pairs
    #: dense facet-pair blocks of the Hessian: (a, b, B) with B[i, j] = H[off[a] + i, off[b] + j]
    dense: list | None = None

    def full_hessian(self, offsets) -> sp.csr_matrix:
        """The whole Hessian as one scipy matrix (the dense pairs added as sparse entries)."""
        if not self.dense:
            return self.H
        rows, cols, vals = [], [], []
        for a, b, B in self.dense:
            r, c = np.nonzero(B)
            rows += [r + offsets[a], c + offsets[b]]
            cols += [c + offsets[b], r + offsets[a]]
            vals += [B[r, c], B[r, c]]
        extra = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=self.H.shape
        )
        return (self.H + extra).tocsr()


class LikelihoodEngine:
    """Evaluates the negative log-likelihood of one dimension's data on a torch device."""

    def __init__(self, data: FacetData, device: str | torch.device = "cpu", chunk: int = 2_000_000):
        self.data = data
        self.device = torch.device(device)
        self.chunk = int(chunk)
        dev = self.device
        self.idx = [_read_only(np.ascontiguousarray(a), torch.int64, dev) for a in data.idx]
        self.x = _read_only(data.x, torch.int64, dev)
        self.w = None if data.w is None else torch.tensor(np.asarray(data.w, dtype=np.float64), device=dev)
        self.N = len(data.x)
        self.K = data.K
        self.sizes = list(data.sizes)
        self.off = data.offsets
        self.n = data.n_params
        self._setup_structure()

    # ------------------------------------------------------------------ structure
    def _chunks(self):
        for s in range(0, self.N, self.chunk):
            yield s, min(s + self.chunk, self.N)

    def _setup_structure(self):
        """Find which pairs of elements share observations (the Hessian's sparsity pattern)."""
        A = len(self.sizes)
        self.pairs = []  # (a, b, mode, rows, cols, aux)
        for a in range(A):
            for b in range(a + 1, A):
                Sa, Sb = self.sizes[a], self.sizes[b]
                cells = Sa * Sb
                if (BLOCK_MIN_CELLS <= cells <= BLOCK_MAX_CELLS
                        and self._distinct_pairs(a, b) >= BLOCK_MIN_FILL * cells):
                    self.pairs.append((a, b, "block", None, None, None))
                elif Sa * Sb <= _DENSE_PAIR_LIMIT:
                    cnt = torch.zeros(Sa * Sb, dtype=torch.float64, device=self.device)
                    for s, e in self._chunks():
                        key = self.idx[a][s:e] * Sb + self.idx[b][s:e]
                        cnt += torch.bincount(key, minlength=Sa * Sb).to(torch.float64)
                    nz = torch.nonzero(cnt > 0).ravel()
                    nz_np = nz.cpu().numpy()
                    self.pairs.append((a, b, "dense", nz_np // Sb, nz_np % Sb, nz))
                else:
                    key = self.idx[a] * Sb + self.idx[b]
                    uniq, inv = torch.unique(key, return_inverse=True)
                    u = uniq.cpu().numpy()
                    self.pairs.append((a, b, "unique", u // Sb, u % Sb, (inv, len(u))))
        self._csr_cache = None

    def _distinct_pairs(self, a: int, b: int) -> int:
        """Cells of the facet pair (a, b) with an observation (the count of observations, an upper
        bound, above the bincount limit)."""
        Sa, Sb = self.sizes[a], self.sizes[b]
        if Sa * Sb > _DENSE_PAIR_LIMIT:
            return self.N
        seen = torch.zeros(Sa * Sb, dtype=torch.bool, device=self.device)
        for s, e in self._chunks():
            seen[self.idx[a][s:e] * Sb + self.idx[b][s:e]] = True
        return int(seen.sum())

    def adjacency(self) -> sp.csr_matrix:
        """Element-by-element adjacency (elements that share an observation), for connectivity."""
        n_el = self.off[-1]
        rows, cols = [], []
        for a, b, mode, r, c, _aux in self.pairs:
            if mode == "block":
                r, c = np.nonzero(self._seen_block(a, b))
            rows.append(r + self.off[a])
            cols.append(c + self.off[b])
        if rows:
            r = np.concatenate(rows)
            c = np.concatenate(cols)
        else:
            r = c = np.zeros(0, dtype=np.int64)
        M = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n_el, n_el))
        return (M + M.T).tocsr()

    def _seen_block(self, a, b):
        Sa, Sb = self.sizes[a], self.sizes[b]
        seen = torch.zeros(Sa * Sb, dtype=torch.bool, device=self.device)
        for s, e in self._chunks():
            seen[self.idx[a][s:e] * Sb + self.idx[b][s:e]] = True
        return seen.reshape(Sa, Sb).cpu().numpy()

    # ----------------------------------------------------------------- evaluation
    def _bincount(self, index, weights, size):
        return torch.bincount(index, weights=weights, minlength=size)

    def evaluate(self, params: np.ndarray, need_hessian: bool = True) -> Evaluation:
        dev = self.device
        prm = torch.as_tensor(params, dtype=torch.float64, device=dev)
        A = len(self.sizes)
        blocks = [prm[self.off[a] : self.off[a + 1]] for a in range(A)]
        K = self.K
        pcm = self.data.pcm
        tau = prm[self.off[A] :]
        if K > 1:
            T = tau.reshape(-1, K)  # (1 or L_r, K)
            cum = torch.cat([torch.zeros(T.shape[0], 1, dtype=torch.float64, device=dev), torch.cumsum(T, dim=1)], dim=1)
            kvec = torch.arange(K + 1, dtype=torch.float64, device=dev)

        f = torch.zeros((), dtype=torch.float64, device=dev)
        grad_el = [torch.zeros(s, dtype=torch.float64, device=dev) for s in self.sizes]
        diag_el = [torch.zeros(s, dtype=torch.float64, device=dev) for s in self.sizes]
        pair_vals = [None] * len(self.pairs)
        n_tau = self.data.n_tau
        g_tau = torch.zeros(n_tau, dtype=torch.float64, device=dev)
        if need_hessian and n_tau:
            # tau x tau and tau x element-facet blocks, dense
            if pcm is None:
                h_tt = torch.zeros(K, K, dtype=torch.float64, device=dev)
            else:
                h_tt = torch.zeros(self.sizes[pcm], K, K, dtype=torch.float64, device=dev)
            h_te = [torch.zeros(s, n_tau, dtype=torch.float64, device=dev) for s in self.sizes]

        for s, e in self._chunks():
            ii = [ix[s:e] for ix in self.idx]
            eta = blocks[0][ii[0]]
            for a in range(1, A):
                eta = eta - blocks[a][ii[a]]
            x = self.x[s:e]
            xf = x.to(torch.float64)
            w = None if self.w is None else self.w[s:e]
            if K <= 1:
                # dichotomous: log P(x) = x*eta - softplus(eta)
                ll = xf * eta - torch.nn.functional.softplus(eta)
                E = torch.sigmoid(eta)
                V = E * (1.0 - E)
            else:
                c = cum[0] if pcm is None else cum[ii[pcm]]  # (K+1) or (n, K+1)
                psi = eta[:, None] * kvec - c
                logZ = torch.logsumexp(psi, dim=1)
                logP = psi - logZ[:, None]
                ll = torch.gather(logP, 1, x[:, None]).squeeze(1)
                P = torch.exp(logP)
                E = P @ kvec
                V = P @ (kvec * kvec) - E * E
                # G[:, k-1] = P(X >= k), k = 1..K ; J[:, k-1] = sum_{j>=k} j P_j
                G = torch.flip(torch.cumsum(torch.flip(P, [1]), 1), [1])[:, 1:]
                J = torch.flip(torch.cumsum(torch.flip(P * kvec, [1]), 1), [1])[:, 1:]
                ind = (x[:, None] >= torch.arange(1, K + 1, device=dev)).to(torch.float64)
            r = xf - E
            if w is not None:
                ll = ll * w
                r = r * w
                Vw = V * w
            else:
                Vw = V
            f = f - ll.sum()
            # gradient of -loglik: persons -(x-E), facets +(x-E)
            for a in range(A):
                grad_el[a] += self._bincount(ii[a], r, self.sizes[a])
            if K > 1:
                gt = ind - G
                if w is not None:
                    gt = gt * w[:, None]
                if pcm is None:
                    g_tau += gt.sum(0)
                else:
                    Lr = self.sizes[pcm]
                    for k in range(K):
                        g_tau[k::K] += self._bincount(ii[pcm], gt[:, k], Lr)
            if not need_hessian:
                continue
            for a in range(A):
                diag_el[a] += self._bincount(ii[a], Vw, self.sizes[a])
            for q, (a, b, mode, _r, _c, aux) in enumerate(self.pairs):
                if mode == "block":
                    Sb = self.sizes[b]
                    if pair_vals[q] is None:
                        pair_vals[q] = torch.zeros(self.sizes[a] * Sb, dtype=torch.float64, device=dev)
                    pair_vals[q].index_put_((ii[a] * Sb + ii[b],), Vw, accumulate=True)
                    continue
                if mode == "dense":
                    key = ii[a] * self.sizes[b] + ii[b]
                    v = self._bincount(key, Vw, self.sizes[a] * self.sizes[b])[aux]
                else:
                    inv, nu = aux
                    v = self._bincount(inv[s:e], Vw, nu)
                pair_vals[q] = v if pair_vals[q] is None else pair_vals[q] + v
            if K > 1:
                covx = J - E[:, None] * G  # Cov(X, 1[X>=k])
                if w is not None:
                    covx = covx * w[:, None]
                    Gw = G * w[:, None]
                    wsum = w
                else:
                    Gw = G
                    wsum = None
                if pcm is None:
                    # sum_i w G_max(k,l) - sum_i w G_k G_l
                    sG = Gw.sum(0)
                    kk = torch.arange(K, device=dev)
                    mx = torch.maximum(kk[:, None], kk[None, :])
                    h_tt += sG[mx] - G.T @ Gw
                    for a in range(A):
                        for k in range(K):
                            h_te[a][:, k] += self._bincount(ii[a], covx[:, k], self.sizes[a])
                else:
                    Lr = self.sizes[pcm]
                    for k in range(K):
                        for l in range(K):
                            m = max(k, l)
                            val = (G[:, m] - G[:, k] * G[:, l])
                            if wsum is not None:
                                val = val * wsum
                            h_tt[:, k, l] += self._bincount(ii[pcm], val, Lr)
                    for a in range(A):
                        key = ii[a] * Lr + ii[pcm]
                        for k in range(K):
                            blk = self._bincount(key, covx[:, k], self.sizes[a] * Lr).reshape(self.sizes[a], Lr)
                            h_te[a][:, k::K] += blk

        g = np.empty(self.n)
        for a in range(A):
            sign = -1.0 if a == 0 else 1.0
            g[self.off[a] : self.off[a + 1]] = sign * grad_el[a].cpu().numpy()
        if n_tau:
            g[self.off[A] :] = g_tau.cpu().numpy()
        ev = Evaluation(f=float(f), g=g)
        if not need_hessian:
            return ev

        rows, cols, vals = [], [], []
        for a in range(A):
            o = self.off[a]
            rows.append(np.arange(o, o + self.sizes[a]))
            cols.append(rows[-1])
            vals.append(diag_el[a].cpu().numpy())
        dense = []
        for q, (a, b, mode, r, c, _aux) in enumerate(self.pairs):
            sign = -1.0 if a == 0 else 1.0  # d eta/d theta = +1, d eta/d b = -1
            if mode == "block":
                B = pair_vals[q]
                if B is None:
                    B = torch.zeros(self.sizes[a] * self.sizes[b], dtype=torch.float64)
                if sign < 0:
                    B.neg_()
                dense.append((a, b, B.reshape(self.sizes[a], self.sizes[b]).cpu().numpy()))
                continue
            v = sign * pair_vals[q].cpu().numpy() if pair_vals[q] is not None else np.zeros(len(r))
            rows += [r + self.off[a], c + self.off[b]]
            cols += [c + self.off[b], r + self.off[a]]
            vals += [v, v]
        if n_tau:
            o = self.off[A]
            if pcm is None:
                tt = h_tt.cpu().numpy()
                ti = np.arange(K)
                rr, cc = np.meshgrid(ti, ti, indexing="ij")
                rows.append(rr.ravel() + o)
                cols.append(cc.ravel() + o)
                vals.append(tt.ravel())
            else:
                tt = h_tt.cpu().numpy()  # (Lr, K, K)
                Lr = tt.shape[0]
                base = (np.arange(Lr) * K)[:, None, None]
                kk = np.arange(K)
                rr = base + kk[None, :, None] + np.zeros((1, 1, K), dtype=np.int64)
                cc = base + kk[None, None, :] + np.zeros((1, K, 1), dtype=np.int64)
                rows.append(rr.ravel() + o)
                cols.append(cc.ravel() + o)
                vals.append(tt.ravel())
            for a in range(A):
                sign = -1.0 if a == 0 else 1.0  # d2/(d theta d tau) = -Cov ; d b : +Cov
                blk = sign * h_te[a].cpu().numpy()
                nzr, nzc = np.nonzero(blk)
                rows += [nzr + self.off[a], nzc + o]
                cols += [nzc + o, nzr + self.off[a]]
                vals += [blk[nzr, nzc], blk[nzr, nzc]]
        R = np.concatenate(rows)
        C = np.concatenate(cols)
        Vv = np.concatenate(vals)
        ev.H = sp.csr_matrix((Vv, (R, C)), shape=(self.n, self.n))
        ev.dense = dense
        return ev


class GridLikelihoodEngine:
    """Binary data of a densely crossed design held as a grid of cells, one byte per cell.

    A leaderboard (models x items) or a fully crossed judging design (models x questions x
    judges x items): each cell holds its response (0/1) or -1 when missing. A pass over the data
    is then a few streaming array operations and axis sums per block of cells, with no gathers
    and no scatters; every Hessian block between two facets is a sum of the cell variances over
    the other axes. With two facets the models x items block comes out dense
    (``Evaluation.dense``) for the iterative solver; with more, all blocks go into the sparse
    matrix through an index structure built once. Used for a binary scale, no weights, at most
    one observation per cell and enough cells observed (:meth:`suitable`); the numbers are those
    of :class:`LikelihoodEngine`.
    """

    def __init__(self, data: FacetData, device: str | torch.device = "cpu", chunk: int = 2_000_000):
        self.data = data
        self.device = torch.device(device)
        self.sizes = sizes = list(data.sizes)
        self.off = data.offsets
        self.n = data.n_params
        A = len(sizes)
        strides = [int(np.prod(sizes[a + 1 :])) for a in range(A)]
        grid = torch.full((int(np.prod(sizes)),), -1, dtype=torch.int8, device=self.device)
        for s in range(0, len(data.x), chunk):
            key = torch.zeros(min(chunk, len(data.x) - s), dtype=torch.int64, device=self.device)
            for a in range(A):
                key += _read_only(data.idx[a][s : s + chunk], None, self.device) * strides[a]
            grid[key] = _read_only(data.x[s : s + chunk], None, self.device).to(torch.int8)
        if int((grid >= 0).sum()) != len(data.x):
            raise ValueError("some cells are observed more than once")
        self.grid = grid.reshape(sizes)
        # blocks of the first axis: on CPU ~32K cells, so that the temporaries stay in cache
        # (measured 3x faster than 1M-cell blocks); on a GPU large blocks
        cells = (1 << 15) if self.device.type == "cpu" else (1 << 24)
        self.rows = max(1, cells // max(strides[0], 1))
        self.pairs = [(a, b) for a in range(A) for b in range(a + 1, A)]
        self._grad_pairs = [(a, min(a + 1, A - 1)) if a + 1 < A else (0, a)
                            for a in range(0, A, 2)]
        self._structure = None

    def _others(self, a: int, b: int) -> tuple[int, ...]:
        return tuple(d for d in range(len(self.sizes)) if d not in (a, b))

    @staticmethod
    def _add(acc, a, s, e, part):
        """Add a block's 1-D sum to facet ``a`` (rows s:e when ``a`` is the blocked axis)."""
        if a == 0:
            acc[0][s:e] = part
        else:
            acc[a] += part

    @staticmethod
    def suitable(data: FacetData) -> bool:
        if len(data.sizes) < 2 or data.K != 1 or data.w is not None:
            return False
        cells = int(np.prod(data.sizes))
        return BLOCK_MIN_CELLS <= cells <= BLOCK_MAX_CELLS and len(data.x) >= BLOCK_MIN_FILL * cells

    def _shape(self, a: int) -> list[int]:
        shape = [1] * len(self.sizes)
        shape[a] = -1
        return shape

    def evaluate(self, params: np.ndarray, need_hessian: bool = True) -> Evaluation:
        dev, f64 = self.device, torch.float64
        sizes, A = self.sizes, len(self.sizes)
        prm = torch.as_tensor(params, dtype=f64, device=dev)
        el = [prm[self.off[a] : self.off[a + 1]].reshape(self._shape(a)) for a in range(A)]
        f = torch.zeros((), dtype=f64, device=dev)
        grad = [torch.zeros(s, dtype=f64, device=dev) for s in sizes]
        diag = [torch.zeros(s, dtype=f64, device=dev) for s in sizes]
        pair = {}
        if need_hessian:
            if A == 2:
                pair[(0, 1)] = torch.empty(sizes[0], sizes[1], dtype=f64, device=dev)
            else:
                pair = {(a, b): torch.zeros(sizes[a], sizes[b], dtype=f64, device=dev)
                        for a, b in self.pairs}
        for s in range(0, sizes[0], self.rows):
            e = min(s + self.rows, sizes[0])
            X = self.grid[s:e]
            obs = (X >= 0).to(f64)
            y = (X == 1).to(f64)
            eta = el[0][s:e]
            for a in range(1, A):
                eta = eta - el[a]
            # -log P(x) = softplus(eta) - x * eta (y is 0 where a cell is missing)
            f += (torch.nn.functional.softplus(eta) * obs).sum() - (y * eta).sum()
            p = torch.sigmoid(eta)
            r = (y - p).mul_(obs)
            # 1-D sums of r from 2-D ones over pairs of axes: one full reduction per two facets
            for a, b in self._grad_pairs:
                two = r if A == 2 else r.sum(self._others(a, b))
                self._add(grad, a, s, e, two.sum(1))
                self._add(grad, b, s, e, two.sum(0))
            if not need_hessian:
                continue
            V = p.mul_(1.0 - p).mul_(obs)
            if A == 2:
                diag[0][s:e] = V.sum(1)
                diag[1] += V.sum(0)
                torch.neg(V, out=pair[(0, 1)][s:e])
                continue
            for a, b in self.pairs:  # each pair block is a 2-D sum; the diagonal follows from it
                part = V.sum(self._others(a, b))
                if a == 0:
                    pair[(a, b)][s:e] = -part
                else:
                    pair[(a, b)] += part
                if a == 0 and b == 1:
                    diag[0][s:e] = part.sum(1)
                if a == 0:
                    diag[b] += part.sum(0)
        g = np.concatenate([(-grad[0]).cpu().numpy()] + [gr.cpu().numpy() for gr in grad[1:]])
        ev = Evaluation(f=float(f), g=g)
        if not need_hessian:
            return ev
        dvals = np.concatenate([d.cpu().numpy() for d in diag])
        if A == 2:
            ev.H = sp.diags(dvals, format="csr")
            ev.dense = [(0, 1, pair[(0, 1)].cpu().numpy())]
            return ev
        rows, cols = self._hessian_structure()
        vals = np.concatenate([dvals] + [np.tile(pair[q].cpu().numpy().ravel(), 2)
                                         for q in self.pairs])
        ev.H = sp.csr_matrix((vals, (rows, cols)), shape=(self.n, self.n))
        ev.dense = []
        return ev

    def _hessian_structure(self):
        """Row and column of every Hessian entry (diagonal, then each pair and its mirror)."""
        if self._structure is None:
            n_el = self.off[-1]
            rows, cols = [np.arange(n_el)], [np.arange(n_el)]
            for a, b in self.pairs:
                r, c = np.meshgrid(np.arange(self.sizes[a]) + self.off[a],
                                   np.arange(self.sizes[b]) + self.off[b], indexing="ij")
                rows += [r.ravel(), c.ravel()]
                cols += [c.ravel(), r.ravel()]
            self._structure = (np.concatenate(rows), np.concatenate(cols))
        return self._structure


def make_engine(data: FacetData, device="cpu", chunk: int = 2_000_000):
    """The grid engine for a binary leaderboard-shaped design, the general engine otherwise."""
    if GridLikelihoodEngine.suitable(data):
        try:
            return GridLikelihoodEngine(data, device=device, chunk=chunk)
        except ValueError:
            pass
    return LikelihoodEngine(data, device=device, chunk=chunk)
