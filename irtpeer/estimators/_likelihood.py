"""Joint log-likelihood of a many-facet Rasch model, its gradient and its Hessian, in torch.

Parameters live in one vector laid out as ``[theta | b_1 | ... | b_F | tau]``: persons, then each
facet's elements, then thresholds (none for a dichotomous scale, ``K`` for the Andrich rating
scale, ``L_r * K`` for a partial-credit facet ``r``, element-major). For an observation

    eta = theta_p - sum_f b_{f, e_f}
    log P(x = k) = k * eta - sum_{j <= k} tau_j - log Z.

One pass over the observations (in chunks, on CPU or CUDA, float64) gives the negative
log-likelihood, its gradient and the Hessian as a scipy sparse matrix whose within-facet blocks
are diagonal (each observation touches one element of each facet).

How a pass is organised (the same on CPU and CUDA):

* every sum over observations goes into one float64 buffer allocated once per engine, through
  :class:`~irtpeer.estimators._segsum.SegmentSums`: ``index_add_`` on CPU; on CUDA each index
  sorted once and summed by runs, the same bits at every run without torch's slow deterministic
  ``index_add_`` (``torch.bincount`` checks its index range, synchronising a GPU at every call);
* the Hessian's sparsity pattern is found once: every pair of facets gets a compact index of its
  observed cells (a lookup table when the pair has few cells, else an int32 index per
  observation), and the scipy CSR matrix is built once; each pass only fills its data array
  (:class:`CSRPattern`);
* the whole result (objective, gradient, Hessian values) leaves the device in one transfer;
* integer codes stay in the dtype they come in (int32 or smaller); only a chunk's worth is ever
  widened.

A pair of large facets crossed densely (a leaderboard: thousands of models x tens of thousands of
items, most cells observed) is kept as a dense array ``Evaluation.dense`` instead: one float64
per cell, filled in place; the iterative solver multiplies with it by BLAS
(:mod:`irtpeer.estimators._cg`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch

from .._design import FacetData
from ._segsum import SegmentSums, deterministic

__all__ = ["CSRPattern", "Evaluation", "FacetData", "GridLikelihoodEngine", "LikelihoodEngine",
           "deterministic", "make_engine"]

_DENSE_PAIR_LIMIT = 1 << 26  # above: a pair's observed cells are found by sorting, not a bitmap
#: A facet pair with at least this many cells, at least BLOCK_MIN_FILL of them observed and at
#: most BLOCK_MAX_CELLS cells, is kept as a dense block (``Evaluation.dense``).
BLOCK_MIN_CELLS = 1 << 20
BLOCK_MIN_FILL = 0.2
BLOCK_MAX_CELLS = 1 << 29
#: A facet pair's cells are looked up in a table (4 bytes per cell) when there are at most
#: LUT_MIN_CELLS or at most LUT_CELLS_PER_OBS per observation (the table then costs at most one
#: byte per observation); otherwise each observation keeps its cell's index (4 bytes)
LUT_MIN_CELLS = 1 << 16
LUT_CELLS_PER_OBS = 0.25
#: Observations per chunk of a pass on CPU (measured at 1.2 M ratings: a rating-scale pass
#: 0.78 -> 0.41 CPU s, binary 0.16 -> 0.13, against 2 M-observation chunks)
CPU_CHUNK = 1 << 16
#: Cells per block of a grid pass on CPU (temporaries stay in cache: measured fastest)
GRID_BLOCK_CELLS = 1 << 15
#: Cells per slice when the element sums are counted on the grid (temporaries of a byte a cell)
GRID_SUM_CELLS = 1 << 24
_INDEX_DTYPES = (torch.int32, torch.int64)
_F64 = torch.float64


def _read_only(a: np.ndarray, dtype, device) -> torch.Tensor:
    """``torch.as_tensor`` without copying a read-only array (the scores of a copy-on-write
    DataFrame): the tensor is only ever read, so torch's warning about writing does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(a, dtype=dtype, device=device)


def _codes(a: np.ndarray, device) -> torch.Tensor:
    """Integer codes on the device in their own dtype (no int64 copy of int32 codes)."""
    a = np.ascontiguousarray(a)
    if a.dtype == np.uint32 or a.dtype == np.uint64:  # torch indexes with signed types only
        a = a.astype(np.int64)
    return _read_only(a, None, device)


def _as_index(t: torch.Tensor) -> torch.Tensor:
    """A chunk of codes usable as an index (int8/int16/uint8 codes widened for this chunk only:
    a uint8 tensor would be taken as a boolean mask)."""
    return t if t.dtype in _INDEX_DTYPES else t.to(torch.int32)


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
            B = B.cpu().numpy() if isinstance(B, torch.Tensor) else B
            r, c = np.nonzero(B)
            rows += [r + offsets[a], c + offsets[b]]
            cols += [c + offsets[b], r + offsets[a]]
            vals += [B[r, c], B[r, c]]
        extra = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=self.H.shape
        )
        return (self.H + extra).tocsr()


class CSRPattern:
    """A fixed sparsity pattern whose entry ``k`` is ``sign[k] * values[src[k]]``.

    Built once from unordered ``(rows, cols)`` (no duplicates); :meth:`matrix` then only gathers
    the data array: no COO-to-CSR conversion per Newton iteration, and every matrix shares the
    same ``indices``/``indptr`` arrays (so a sub-matrix's pattern can be cached as well).
    """

    def __init__(self, rows, cols, src, sign, n: int):
        # scipy's COO -> CSR conversion (a counting sort) on entries whose data are their
        # positions gives the order: faster than sorting keys
        nnz = len(rows)
        P = sp.coo_matrix((np.arange(1, nnz + 1, dtype=np.float64), (rows, cols)), shape=(n, n)).tocsr()
        if P.nnz != nnz:
            raise ValueError("duplicate entries in a Hessian pattern")
        order = P.data.astype(np.int64) - 1
        self.n = n
        self.indices, self.indptr = P.indices, P.indptr
        self.src = np.asarray(src, dtype=np.int64)[order]
        sign = np.asarray(sign, dtype=np.float64)[order]
        self.sign = None if np.all(sign == 1.0) else sign

    @classmethod
    def from_csr(cls, indices, indptr, src, sign, n: int) -> CSRPattern:
        """A pattern whose CSR arrays are already laid out (sorted, no duplicates) in the order
        of ``src`` and ``sign`` (None: all +1)."""
        self = cls.__new__(cls)
        dt = np.int32 if max(n, len(indices)) < 2**31 else np.int64
        self.n = n
        self.indices, self.indptr = np.asarray(indices, dtype=dt), np.asarray(indptr, dtype=dt)
        self.src = np.asarray(src, dtype=np.int64)
        sign = None if sign is None else np.asarray(sign, dtype=np.float64)
        self.sign = None if sign is None or np.all(sign == 1.0) else sign
        return self

    @property
    def nnz(self) -> int:
        return len(self.src)

    def matrix(self, values: np.ndarray) -> sp.csr_matrix:
        data = np.take(values, self.src)
        if self.sign is not None:
            data *= self.sign
        M = sp.csr_matrix((data, self.indices, self.indptr), shape=(self.n, self.n), copy=False)
        M.has_sorted_indices = True
        M.has_canonical_format = True
        return M


class LikelihoodEngine:
    """Evaluates the negative log-likelihood of one dimension's data on a torch device."""

    def __init__(self, data: FacetData, device: str | torch.device = "cpu", chunk: int = 2_000_000):
        self.data = data
        self.device = torch.device(device)
        # on CPU a pass goes through CPU_CHUNK observations at a time whatever ``chunk`` says:
        # the temporaries (several float64 per observation and category) then stay in cache
        self.chunk = int(chunk) if self.device.type != "cpu" else min(int(chunk), CPU_CHUNK)
        dev = self.device
        self.idx = [_codes(a, dev) for a in data.idx]
        self.x = _codes(data.x, dev)
        self.w = None if data.w is None else torch.tensor(np.asarray(data.w, dtype=np.float64), device=dev)
        self.N = len(data.x)
        self.K = data.K
        self.sizes = list(data.sizes)
        self.off = data.offsets
        self.n = data.n_params
        self.passes = 0
        self.sums = SegmentSums(self.device)  # dst[index] += src, in a fixed order
        self._setup_structure()
        self._setup_buffer()

    # ------------------------------------------------------------------ structure
    def _chunks(self):
        for s in range(0, self.N, self.chunk):
            yield s, min(s + self.chunk, self.N)

    def _ix(self, a: int, s: int, e: int) -> torch.Tensor:
        return _as_index(self.idx[a][s:e])

    def _key(self, a: int, b: int, s: int, e: int, Sb: int | None = None) -> torch.Tensor:
        """Cell of the facet pair (a, b) of each observation in s:e (int64, this chunk only)."""
        Sb = self.sizes[b] if Sb is None else Sb
        return self.idx[a][s:e].to(torch.int64) * Sb + self.idx[b][s:e]

    def _setup_structure(self):
        """Find which pairs of elements share observations (the Hessian's sparsity pattern) and
        give each pair a compact index of its observed cells."""
        A = len(self.sizes)
        self.pairs = []  # (a, b, mode, rows, cols, aux)
        for a in range(A):
            for b in range(a + 1, A):
                Sa, Sb = self.sizes[a], self.sizes[b]
                cells = Sa * Sb
                seen = self._seen(a, b) if cells <= _DENSE_PAIR_LIMIT else None
                observed = self.N if seen is None else int(seen.sum())  # an upper bound if None
                if BLOCK_MIN_CELLS <= cells <= BLOCK_MAX_CELLS and observed >= BLOCK_MIN_FILL * cells:
                    self.pairs.append((a, b, "block", None, None, None))
                    continue
                if seen is not None:
                    nz = torch.nonzero(seen).ravel()
                    del seen
                    nz_np = nz.cpu().numpy()
                    lut = torch.full((cells,), -1, dtype=torch.int32, device=self.device)
                    lut[nz] = torch.arange(len(nz), dtype=torch.int32, device=self.device)
                    if cells <= max(self.N * LUT_CELLS_PER_OBS, LUT_MIN_CELLS):
                        self.pairs.append((a, b, "lut", nz_np // Sb, nz_np % Sb, lut))
                        continue
                    inv = torch.empty(self.N, dtype=torch.int32, device=self.device)
                    for s, e in self._chunks():
                        inv[s:e] = lut[self._key(a, b, s, e)]
                    del lut
                    self.pairs.append((a, b, "inverse", nz_np // Sb, nz_np % Sb, inv))
                else:
                    key = self.idx[a].to(torch.int64) * Sb + self.idx[b]
                    uniq, inv = torch.unique(key, return_inverse=True)
                    del key
                    u = uniq.cpu().numpy()
                    self.pairs.append((a, b, "inverse", u // Sb, u % Sb, inv.to(torch.int32)))

    def _pair_cells(self, q: int, s: int, e: int) -> torch.Tensor:
        """Where the observations s:e of facet pair ``q`` go: their cell of a dense block, or
        the compact index of their observed cell."""
        a, b, mode, _r, _c, aux = self.pairs[q]
        if mode == "block":
            return self._key(a, b, s, e)
        return aux[s:e] if mode == "inverse" else aux[self._key(a, b, s, e)]

    def _seen(self, a: int, b: int, Sb: int | None = None) -> torch.Tensor:
        """Which cells of the facet pair (a, b) hold an observation (one byte per cell)."""
        Sb = self.sizes[b] if Sb is None else Sb
        seen = torch.zeros(self.sizes[a] * Sb, dtype=torch.bool, device=self.device)
        for s, e in self._chunks():
            seen[self._key(a, b, s, e, Sb)] = True
        return seen

    def _pcm_cells(self) -> list[np.ndarray]:
        """Per facet, the cells (element * L_r + pcm element) observed together with the
        partial-credit facet: where the element x threshold block of the Hessian is non-zero."""
        pcm, Lr = self.data.pcm, self.sizes[self.data.pcm]
        out = []
        for a in range(len(self.sizes)):
            if a == pcm:
                out.append(np.arange(Lr) * Lr + np.arange(Lr))
                continue
            p = next(p for p in self.pairs if {p[0], p[1]} == {a, pcm})
            if p[2] == "block":
                out.append(torch.nonzero(self._seen(a, pcm, Lr)).ravel().cpu().numpy())
            else:
                r, c = (p[3], p[4]) if p[0] == a else (p[4], p[3])
                out.append(np.sort(r * Lr + c))
        return out

    def _setup_buffer(self):
        """Lay out one float64 buffer for every sum of a pass and the CSR pattern that reads it."""
        A, K, n, off, sizes = len(self.sizes), self.K, self.n, self.off, self.sizes
        n_el, n_tau = off[A], self.data.n_tau
        pos = 1 + n  # [f | gradient (elements, thresholds) | ...]
        rows, cols, src, sign = [], [], [], []

        def entries(r, c, at, sg, mirror=True):
            rows.append(r)
            cols.append(c)
            src.append(at)
            sign.append(np.full(len(at), sg))
            if mirror:
                entries(c, r, at, sg, mirror=False)

        self.o_diag = pos
        ar = np.arange(n_el)
        entries(ar, ar, pos + ar, 1.0, mirror=False)
        pos += n_el
        self.o_pair = []
        for a, b, mode, r, c, _aux in self.pairs:
            if mode == "block":
                self.o_pair.append(None)
                continue
            self.o_pair.append(pos)
            entries(r + off[a], c + off[b], pos + np.arange(len(r)), -1.0 if a == 0 else 1.0)
            pos += len(r)
        self.o_tt = pos
        self.o_te, self.pcm_cells = [], None
        if n_tau:
            o = off[A]
            kk = np.arange(K)
            sets = 1 if self.data.pcm is None else sizes[self.data.pcm]
            base = (np.arange(sets) * K)[:, None, None]
            rr = np.broadcast_to(base + kk[None, :, None], (sets, K, K)).ravel()
            cc = np.broadcast_to(base + kk[None, None, :], (sets, K, K)).ravel()
            entries(rr + o, cc + o, pos + np.arange(sets * K * K), 1.0, mirror=False)
            pos += sets * K * K
            if self.data.pcm is not None:
                self.pcm_cells = self._pcm_cells()
                self._pcm_cells_dev = [torch.as_tensor(c, device=self.device) for c in self.pcm_cells]
            for a in range(A):
                sg = -1.0 if a == 0 else 1.0  # d2/(d theta d tau) = -Cov ; d b : +Cov
                self.o_te.append(pos)
                if self.data.pcm is None:
                    el, tcol = np.repeat(np.arange(sizes[a]), K), np.tile(kk, sizes[a])
                else:
                    cells, Lr = self.pcm_cells[a], sizes[self.data.pcm]
                    el = np.repeat(cells // Lr, K)
                    tcol = (np.repeat(cells % Lr, K) * K + np.tile(kk, len(cells)))
                entries(el + off[a], tcol + o, pos + np.arange(len(el)), sg)
                pos += len(el)
        self.buf = torch.zeros(pos, dtype=_F64, device=self.device)
        self.pattern = CSRPattern(np.concatenate(rows), np.concatenate(cols),
                                  np.concatenate(src), np.concatenate(sign), n)
        self._gsign = np.ones(n)
        self._gsign[: off[1]] = -1.0  # persons: d eta / d theta = +1

    def memory(self) -> dict:
        """Bytes this engine keeps on its device, and per observation (resident, plus the
        float64 temporaries of one chunk spread over the chunk's observations)."""
        held = [*self.idx, self.x, self.buf] + ([self.w] if self.w is not None else [])
        held += [p[5] for p in self.pairs if p[2] in ("lut", "inverse")]
        resident = sum(t.numel() * t.element_size() for t in held)
        resident += sum(self.sizes[a] * self.sizes[b] * 8 for a, b, m, *_ in self.pairs
                        if m == "block")
        resident += self.sums.nbytes()  # CUDA: each index sorted once (none before a pass)
        per_obs_temps = 8 * (8 + 6 * max(self.K, 1))  # float64 vectors alive within a chunk
        return {"resident_bytes": resident, "bytes_per_obs": resident / max(self.N, 1),
                "chunk_bytes": min(self.chunk, self.N) * per_obs_temps}

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
        return self._seen(a, b).reshape(self.sizes[a], self.sizes[b]).cpu().numpy()

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, params: np.ndarray, need_hessian: bool = True) -> Evaluation:
        dev, A, K, n = self.device, len(self.sizes), self.K, self.n
        self.passes += 1
        prm = torch.as_tensor(params, dtype=_F64, device=dev)
        blocks = [prm[self.off[a] : self.off[a + 1]] for a in range(A)]
        buf = self.buf
        buf.zero_()
        cum = kvec = None
        if K > 1:
            T = prm[self.off[A] :].reshape(-1, K)  # (1 or L_r, K)
            cum = torch.cat([torch.zeros(T.shape[0], 1, dtype=_F64, device=dev),
                             torch.cumsum(T, dim=1)], dim=1)
            kvec = torch.arange(K + 1, dtype=_F64, device=dev)
        dense = {}
        if need_hessian:
            dense = {q: torch.zeros(self.sizes[a] * self.sizes[b], dtype=_F64, device=dev)
                     for q, (a, b, mode, *_r) in enumerate(self.pairs) if mode == "block"}
        hte_pcm = None
        if need_hessian and K > 1 and self.data.pcm is not None:
            Lr = self.sizes[self.data.pcm]
            hte_pcm = [torch.zeros(s * Lr, K, dtype=_F64, device=dev) for s in self.sizes]
        with self.sums.context():
            for s, e in self._chunks():
                self._chunk(s, e, blocks, cum, kvec, need_hessian, dense, hte_pcm)
        if hte_pcm is not None:  # keep the observed element x threshold cells only
            for a in range(A):
                cells = self._pcm_cells_dev[a]
                o = self.o_te[a]
                buf[o : o + len(cells) * K] = hte_pcm[a][cells].ravel()
        host = (buf if need_hessian else buf[: 1 + n]).cpu().numpy()  # the one transfer
        ev = Evaluation(f=float(host[0]), g=host[1 : 1 + n] * self._gsign)
        if not need_hessian:
            return ev
        ev.H = self.pattern.matrix(host)
        ev.dense = []
        for q, B in dense.items():
            a, b = self.pairs[q][:2]
            if a == 0:  # d eta/d theta = +1, d eta/d b = -1
                B.neg_()
            ev.dense.append((a, b, B.reshape(self.sizes[a], self.sizes[b]).cpu().numpy()))
        return ev

    def _chunk(self, s, e, blocks, cum, kvec, need_hessian, dense, hte_pcm):
        """Add one chunk of observations to the pass's buffer."""
        A, K, off, n_el, buf, dev = len(self.sizes), self.K, self.off, self.off[-1], self.buf, self.device
        pcm, add = self.data.pcm, self.sums.add
        ii = [self._ix(a, s, e) for a in range(A)]
        eta = blocks[0][ii[0]]
        for a in range(1, A):
            eta = eta - blocks[a][ii[a]]
        xs = self.x[s:e]
        xf = xs.to(_F64)
        w = None if self.w is None else self.w[s:e]
        if K <= 1:  # dichotomous: log P(x) = x*eta - softplus(eta)
            ll = xf * eta - torch.nn.functional.softplus(eta)
            E = torch.sigmoid(eta)
            V = E * (1.0 - E)
        else:
            xl = xs.to(torch.int64)
            c = cum[0] if pcm is None else cum[ii[pcm]]  # (K+1) or (n, K+1)
            psi = eta[:, None] * kvec - c
            logP = psi - torch.logsumexp(psi, dim=1)[:, None]
            ll = torch.gather(logP, 1, xl[:, None]).squeeze(1)
            P = torch.exp(logP)
            E = P @ kvec
            V = P @ (kvec * kvec) - E * E
            # G[:, k-1] = P(X >= k), k = 1..K ; J[:, k-1] = sum_{j>=k} j P_j
            G = torch.flip(torch.cumsum(torch.flip(P, [1]), 1), [1])[:, 1:]
            J = torch.flip(torch.cumsum(torch.flip(P * kvec, [1]), 1), [1])[:, 1:]
        r = xf - E
        if w is not None:
            ll, r, V = ll * w, r * w, V * w
        buf[0].sub_(ll.sum())
        for a in range(A):  # gradient of -loglik: persons -(x-E), facets +(x-E) (sign later)
            add(("facet", a, s), buf[1 + off[a] : 1 + off[a + 1]], ii[a], r)
        if K > 1:
            gt = (xl[:, None] >= torch.arange(1, K + 1, device=dev)).to(_F64) - G
            if w is not None:
                gt = gt * w[:, None]
            g_tau = buf[1 + n_el : 1 + self.n]
            if pcm is None:
                g_tau.add_(gt.sum(0))
            else:
                add(("facet", pcm, s), g_tau.view(-1, K), ii[pcm], gt)
        if not need_hessian:
            return
        o = self.o_diag
        for a in range(A):
            add(("facet", a, s), buf[o + off[a] : o + off[a + 1]], ii[a], V)
        for q, (_a, _b, mode, _r, *_) in enumerate(self.pairs):
            dst = dense[q] if mode == "block" else buf[self.o_pair[q] : self.o_pair[q] + len(_r)]
            add(("pair", q, s), dst, partial(self._pair_cells, q, s, e), V)
        if K > 1:
            self._tau_hessian(ii, G, J, E, w, hte_pcm, s, e)

    def _tau_hessian(self, ii, G, J, E, w, hte_pcm, s, e):
        """Threshold x threshold and element x threshold blocks of one chunk."""
        A, K, buf, dev, pcm = len(self.sizes), self.K, self.buf, self.device, self.data.pcm
        add = self.sums.add
        covx = J - E[:, None] * G  # Cov(X, 1[X>=k])
        Gw = G
        if w is not None:
            covx = covx * w[:, None]
            Gw = G * w[:, None]
        kk = torch.arange(K, device=dev)
        mx = torch.maximum(kk[:, None], kk[None, :])
        if pcm is None:
            # sum_i w G_max(k,l) - sum_i w G_k G_l
            buf[self.o_tt : self.o_tt + K * K].view(K, K).add_(Gw.sum(0)[mx] - G.T @ Gw)
            for a in range(A):
                o = self.o_te[a]
                add(("facet", a, s), buf[o : o + self.sizes[a] * K].view(-1, K), ii[a], covx)
            return
        Lr = self.sizes[pcm]
        htt = buf[self.o_tt : self.o_tt + Lr * K * K].view(Lr, K, K)
        Gc = G.T.contiguous()  # (K, n): contiguous columns for the 1-D index_add_s
        Gwc = Gc if w is None else Gc * w
        for k in range(K):  # the upper triangle (l >= k), mirrored below
            for m in range(k, K):
                val = Gwc[m] - Gc[k] * Gwc[m]  # w (G_max(k,m) - G_k G_m)
                add(("facet", pcm, s), htt[:, k, m], ii[pcm], val)
                if m > k:
                    add(("facet", pcm, s), htt[:, m, k], ii[pcm], val)
        for a in range(A):
            add(("te", a, s), hte_pcm[a], partial(self._key, a, pcm, s, e, Lr), covx)


class GridLikelihoodEngine:
    """Binary data of a densely crossed design held as a grid of cells, one byte per cell.

    A leaderboard (models x items) or a fully crossed judging design (models x questions x
    judges x items): each cell holds its response (0/1) or -1 when missing. The grid is seen as
    ``(persons, F1, R)`` with ``R`` the product of the remaining (small) facets, so that
    ``eta = (theta_p - sum of the small facets' parameters)[p, r] - b_1[q]`` is one broadcast
    per block of cells. The responses enter only through each element's total (sufficient
    statistics, counted once): a pass computes ``sigmoid`` and ``softplus`` of ``eta``, and the
    variances, and reduces them to per-(person, r) and per-(F1 element, r) sums, from which every
    gradient entry and every Hessian block follows; missing cells get ``eta = -inf`` (zero
    probability, variance and loss). With two facets the models x items block comes out dense
    (``Evaluation.dense``) for the iterative solver; with more, every block goes into the sparse
    matrix through a pattern built once. Used for a binary scale, no weights, at most one
    observation per cell and enough cells observed (:meth:`suitable`); the numbers are those
    of :class:`LikelihoodEngine`.
    """

    def __init__(self, data: FacetData, device: str | torch.device = "cpu", chunk: int = 2_000_000,
                 totals: list[np.ndarray] | None = None):
        self.data = data
        self.device = dev = torch.device(device)
        self.sizes = sizes = list(data.sizes)
        self.off = data.offsets
        self.n = data.n_params
        self.passes = 0
        A = len(sizes)
        strides = [int(np.prod(sizes[a + 1 :])) for a in range(A)]
        grid = torch.full((int(np.prod(sizes)),), -1, dtype=torch.int8, device=dev)
        kt = torch.int32 if grid.numel() < 2**31 else torch.int64  # cell keys, per chunk
        for s in range(0, len(data.x), chunk):
            key = torch.zeros(min(chunk, len(data.x) - s), dtype=kt, device=dev)
            for a in range(A):
                ix = _read_only(data.idx[a][s : s + chunk], None, dev)
                key.add_(ix if strides[a] == 1 else ix.to(kt) * strides[a])
            grid[key] = _read_only(data.x[s : s + chunk], None, dev).to(torch.int8)
        n_obs = int((grid >= 0).sum())
        if n_obs != len(data.x):
            raise ValueError("some cells are observed more than once")
        self.complete = n_obs == grid.numel()
        self.R = strides[1] if A > 1 else 1
        self.grid = grid.reshape(sizes[0], sizes[1], self.R)
        self.tail = sizes[2:]  # the small facets that make up R
        # blocks of ~32K cells on CPU, so that the temporaries stay in cache; large on a GPU
        cells = GRID_BLOCK_CELLS if dev.type == "cpu" else (1 << 24)
        row = sizes[1] * self.R
        self.r0 = max(1, cells // row) if row <= cells else 1
        self.r1 = sizes[1] if row <= cells else max(1, cells // self.R)
        self.pairs = [(a, b) for a in range(A) for b in range(a + 1, A)]
        # each element's total score: given, or counted at the first pass (or element_sums)
        self.totals = (None if totals is None else
                       torch.as_tensor(np.concatenate(totals), dtype=_F64, device=dev))
        self.pattern = self._hessian_pattern() if A > 2 else None
        self.block_on_device = dev.type != "cpu"  # the dense models x items Hessian block

    @staticmethod
    def suitable(data: FacetData) -> bool:
        if len(data.sizes) < 2 or data.K != 1 or data.w is not None:
            return False
        cells = int(np.prod(data.sizes))
        return BLOCK_MIN_CELLS <= cells <= BLOCK_MAX_CELLS and len(data.x) >= BLOCK_MIN_FILL * cells

    def _blocks(self):
        S0, S1 = self.sizes[0], self.sizes[1]
        for s0 in range(0, S0, self.r0):
            for s1 in range(0, S1, self.r1):
                yield s0, min(s0 + self.r0, S0), s1, min(s1 + self.r1, S1)

    def _reduce(self, sums: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-element sums of every facet from the (persons, R) and (F1, R) sums."""
        acc0, acc1 = sums
        out = [acc0.sum(1), acc1.sum(1)]
        tail = acc0.sum(0).reshape(self.tail)
        for t in range(len(self.tail)):
            others = tuple(d for d in range(len(self.tail)) if d != t)
            out.append(tail.sum(others) if others else tail)
        return out

    def _totals(self) -> torch.Tensor:
        """Each element's total score (the sufficient statistics), counted once."""
        acc0 = torch.zeros(self.sizes[0], self.R, dtype=_F64, device=self.device)
        acc1 = torch.zeros(self.sizes[1], self.R, dtype=_F64, device=self.device)
        for s0, e0, s1, e1 in self._blocks():
            y = (self.grid[s0:e0, s1:e1] == 1).to(_F64)
            acc0[s0:e0] += y.sum(1)
            acc1[s1:e1] += y.sum(0)
        return torch.cat(self._reduce([acc0, acc1]))

    def element_sums(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per facet: every element's count of observed cells and its total score, as exact
        integers in float64, from the grid (numpy sums of one byte per cell: 15 M cells in
        ~0.04 s, ~6x faster than adding over the observations' codes); the totals become the
        engine's."""
        S0, S1, R = self.grid.shape
        grid = self.grid.cpu().numpy()
        person = np.zeros((2, S0), dtype=np.int64)  # counts, totals
        lead = np.zeros((2, S1, R), dtype=np.int64)
        step = max(1, GRID_SUM_CELLS // max(S1 * R, 1))
        for s in range(0, S0, step):
            g = grid[s : s + step]
            # a complete binary grid holds the scores themselves; otherwise -1 marks a missing cell
            parts = [(1, g if self.complete else g == 1)] + ([] if self.complete else [(0, g >= 0)])
            for k, y in parts:
                person[k, s : s + step] = y.reshape(len(g), -1).sum(1, dtype=np.int64)
                lead[k] += y.sum(0, dtype=np.int64)
        if self.complete:  # every cell observed: counts are numbers of cells
            person[0] = S1 * R
            lead[0] = S0
        out = []
        for k in range(2):
            tail = lead[k].sum(0).reshape(self.tail)
            sums = [person[k], lead[k].sum(1)]
            for t in range(len(self.tail)):
                others = tuple(d for d in range(len(self.tail)) if d != t)
                sums.append(tail.sum(others) if others else tail)
            out.append([v.astype(np.float64) for v in sums])
        self.totals = torch.as_tensor(np.concatenate(out[1]), dtype=_F64, device=self.device)
        return out[0], out[1]

    def memory(self) -> dict:
        """Bytes this engine keeps on its device (per observation: about one, the grid)."""
        S0, S1 = self.sizes[0], self.sizes[1]
        resident = self.grid.numel() + 8 * (2 * (S0 + S1) * self.R + S0 * S1 + 2 * self.n)
        n_obs = max(len(self.data.x), 1)
        return {"resident_bytes": resident, "bytes_per_obs": resident / n_obs,
                "chunk_bytes": 8 * 4 * self.r0 * self.r1 * self.R}

    def evaluate(self, params: np.ndarray, need_hessian: bool = True) -> Evaluation:
        dev, sizes, A, R = self.device, self.sizes, len(self.sizes), self.R
        S0, S1 = sizes[0], sizes[1]
        self.passes += 1
        prm = torch.as_tensor(params, dtype=_F64, device=dev)
        el = [prm[self.off[a] : self.off[a + 1]] for a in range(A)]
        small = torch.zeros(self.tail, dtype=_F64, device=dev) if A > 2 else None
        for t in range(A - 2):
            shape = [1] * (A - 2)
            shape[t] = -1
            small = small + el[2 + t].reshape(shape)
        u = el[0][:, None] - (small.reshape(1, R) if A > 2 else 0.0)  # (S0, R)
        p01 = torch.empty(S0, S1, dtype=_F64, device=dev) if need_hessian else None
        blocks = list(self._blocks())
        workers = min(torch.get_num_threads(), len(blocks)) if dev.type == "cpu" else 1
        if workers > 1:
            # blocks of ~32K cells are below torch's grain for intra-op threads: run several
            # blocks at once instead (torch releases the GIL inside each operation)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(lambda i: self._pass(blocks[i::workers], u, el[1], p01),
                                      range(workers)))
            f, psum, vsum = parts[0]
            for f2, ps2, vs2 in parts[1:]:
                f = f + f2
                psum = [a + b for a, b in zip(psum, ps2)]
                vsum = None if vsum is None else [a + b for a, b in zip(vsum, vs2)]
        else:
            f, psum, vsum = self._pass(blocks, u, el[1], p01)
        return self._finish(prm, f, psum, vsum, p01)

    def _pass(self, blocks, u, b1, p01):
        """Sums over the cells of ``blocks``: the loss, and the probabilities and (when
        ``p01`` is given) the variances per (person, r) and per (F1 element, r)."""
        dev, R, (S0, S1) = self.device, self.R, self.sizes[:2]
        need_hessian = p01 is not None
        zeros = [torch.zeros(S0, R, dtype=_F64, device=dev), torch.zeros(S1, R, dtype=_F64, device=dev)]
        psum = [z.clone() for z in zeros]
        vsum = [z.clone() for z in zeros] if need_hessian else None
        f = torch.zeros((), dtype=_F64, device=dev)
        grid = self.grid if R > 1 else self.grid.view(S0, S1)  # two facets: 2-D blocks
        for s0, e0, s1, e1 in blocks:
            if R > 1:
                eta = u[s0:e0, None, :] - b1[s1:e1, None]  # (r0, r1, R)
            else:
                eta = u[s0:e0] - b1[s1:e1]  # (r0, r1)
            if not self.complete:
                eta.masked_fill_(grid[s0:e0, s1:e1] < 0, -float("inf"))
            # softplus(eta) = max(eta, 0) - log(max(p, 1 - p)), from the sigmoid needed anyway:
            # torch's softplus alone cost a third of a pass (its log1p is not vectorised)
            f += eta.clamp_min(0.0).sum()
            p = eta.sigmoid_()
            q = 1.0 - p
            f -= torch.maximum(p, q).log_().sum()
            _add_rows(psum, p, s0, e0, s1, e1, R)
            if not need_hessian:
                continue
            V = q.mul_(p)  # p (1 - p)
            _add_rows(vsum, V, s0, e0, s1, e1, R)
            if R > 1:
                torch.sum(V, 2, out=p01[s0:e0, s1:e1])
            else:
                p01[s0:e0, s1:e1] = V
        return f, psum, vsum

    def _finish(self, prm, f, psum, vsum, p01) -> Evaluation:
        """Gradient, Hessian and loss from the pass's sums, in one transfer to the host."""
        dev, A, S0 = self.device, len(self.sizes), self.sizes[0]
        need_hessian = p01 is not None
        # -loglik = sum softplus(eta) - sum_cells y * eta, the latter linear in the totals
        if self.totals is None:
            self.totals = self._totals()
        T = self.totals
        sign = torch.ones(self.n, dtype=_F64, device=dev)
        sign[: S0] = -1.0
        f = f + (sign * T * prm).sum()
        grad = sign * (T - torch.cat(self._reduce(psum)))
        if not need_hessian:
            host = torch.cat([f.reshape(1), grad]).cpu().numpy()
            return Evaluation(f=float(host[0]), g=host[1:])
        diag = torch.cat(self._reduce(vsum))
        if A == 2:
            host = torch.cat([f.reshape(1), grad, diag]).cpu().numpy()
            ev = Evaluation(f=float(host[0]), g=host[1 : 1 + self.n])
            ev.H = sp.diags(host[1 + self.n :], format="csr")
            # on a GPU the block stays there: the solver's products and Schur complement run
            # there too (a 3,000 x 15,000 block crossed to the host 1.3 s per fit)
            B = p01.neg_()
            ev.dense = [(0, 1, B if self.block_on_device else B.numpy())]
            return ev
        host = torch.cat([f.reshape(1), grad, diag] + [B.ravel() for B in self._pair_blocks(vsum, p01)])
        host = host.cpu().numpy()  # the one transfer
        ev = Evaluation(f=float(host[0]), g=host[1 : 1 + self.n])
        ev.H = self.pattern.matrix(host)
        ev.dense = []
        return ev

    def _pair_blocks(self, vsum, p01) -> list[torch.Tensor]:
        """The Hessian block of every facet pair (sums of the cell variances), in the order of
        ``self.pairs``; negated here for the persons' pairs (d eta / d theta = +1), so that the
        host only gathers them."""
        S0, S1, nt = self.sizes[0], self.sizes[1], len(self.tail)
        out = []
        for a, b in self.pairs:
            if (a, b) == (0, 1):
                out.append(p01.neg_())
            elif a < 2:  # (persons or F1) x a small facet: from the (lead, R) sums
                lead = vsum[a].reshape([S0 if a == 0 else S1, *self.tail])
                others = tuple(1 + t for t in range(nt) if t != b - 2)
                block = lead.sum(others) if others else lead
                out.append(-block if a == 0 else block)  # (a view of vsum: not in place)
            else:  # two small facets
                tail = vsum[0].sum(0).reshape(self.tail)
                others = tuple(t for t in range(nt) if t not in (a - 2, b - 2))
                out.append(tail.sum(others) if others else tail)
        return out

    def _hessian_pattern(self) -> CSRPattern:
        """Diagonal and every pair block (and its mirror), read from the packed transfer.

        Every pair block is dense, so each row of facet ``a`` holds the same columns: all of
        every other facet's, and its own diagonal entry in facet order. The CSR arrays are laid
        out directly, facet by facet (15 M design: 0.26 -> 0.03 s; no COO sort of 3.4 M entries).
        """
        sizes, off, A = self.sizes, self.off, len(self.sizes)
        at = {}  # pair -> where its block starts in the packed transfer
        pos = 1 + self.n + off[-1]
        for a, b in self.pairs:
            at[a, b] = pos
            pos += sizes[a] * sizes[b]
        indices, src, lengths = [], [], []
        for a in range(A):
            i = np.arange(sizes[a])[:, None]
            cols, srcs = [], []
            for b in range(A):
                if b == a:
                    cols.append(off[a] + i)
                    srcs.append(1 + self.n + off[a] + i)
                    continue
                j = np.arange(sizes[b])[None, :]
                cols.append(off[b] + j)
                lo, hi = min(a, b), max(a, b)
                srcs.append(at[lo, hi] + (i * sizes[b] + j if a < b else j * sizes[a] + i))
            width = sum(c.shape[1] for c in cols)
            indices.append(np.hstack([np.broadcast_to(c, (sizes[a], c.shape[1])) for c in cols]))
            src.append(np.hstack(srcs))
            lengths.append(np.full(sizes[a], width))
        indptr = np.concatenate([[0], np.cumsum(np.concatenate(lengths))])
        # no signs: the persons' blocks come negated (_pair_blocks)
        return CSRPattern.from_csr(np.concatenate([x.ravel() for x in indices]), indptr,
                                   np.concatenate([x.ravel() for x in src]), None, self.n)


def _add_rows(acc, v, s0, e0, s1, e1, R):
    """Add a block's values to the per-(person, r) and per-(F1 element, r) sums (a block of one
    person adds its row as it is: no reduction over one row, no temporary)."""
    acc[0][s0:e0] += v.sum(1).view(-1, R)
    acc[1][s1:e1] += v[0].view(-1, R) if e0 - s0 == 1 else v.sum(0).view(-1, R)


def make_engine(data: FacetData, device="cpu", chunk: int = 2_000_000,
                totals: list[np.ndarray] | None = None):
    """The grid engine for a binary leaderboard-shaped design, the general engine otherwise
    (``totals``: each facet's element totals of the scores, when already counted)."""
    if GridLikelihoodEngine.suitable(data):
        try:
            return GridLikelihoodEngine(data, device=device, chunk=chunk, totals=totals)
        except ValueError:
            pass
    return LikelihoodEngine(data, device=device, chunk=chunk)
