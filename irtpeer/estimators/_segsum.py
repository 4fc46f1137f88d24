"""Sums over observations by element, ``dst[index] += src``, in a fixed order on every device.

A likelihood pass adds every observation's residual, variance, ... into its element's slot.
On CPU ``index_add_`` does that in observation order, deterministically and fast. On CUDA it
adds with atomics in no fixed order, so float64 sums differ in their last bits from run to run;
under ``torch.use_deterministic_algorithms`` it sorts the indices at every call and then adds
each element's run serially, which is slow exactly where a facet has few elements (a judge
facet: four runs of 500,000 observations took ~4 ms per call on an H100, 58 ms per pass).

The indices of a pass are the same at every pass, so here each one is sorted once (the first
pass) into a :class:`_Plan`: the order that groups the observations by element, the elements
present and their run lengths. A later pass gathers ``src`` in that order, sums each run with
``torch.segment_reduce`` (a segmented reduction with a fixed tree: the same bits every run) and
writes the sums into their distinct elements (a plain indexed write, one per element). An index
whose elements are all distinct (a leaderboard's model x item cell) needs no order at all: the
write itself is the sum. Plans cost 4 bytes per observation per distinct index, kept on the
device; :meth:`SegmentSums.nbytes` reports them.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Hashable

import torch

IndexLike = torch.Tensor | Callable[[], torch.Tensor]


@contextlib.contextmanager
def deterministic(device: torch.device):
    """On CUDA, ``index_add_`` adds with atomics in no fixed order (float64 sums then differ in
    the last bits from run to run); under ``torch.use_deterministic_algorithms`` it sorts
    instead. Switched on for the duration of a pass (``warn_only``: the pass's few matrix
    products would otherwise need ``CUBLAS_WORKSPACE_CONFIG``), then restored."""
    if device.type != "cuda" or torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Dd]eterministic.*")
            yield
    finally:
        torch.use_deterministic_algorithms(False, warn_only=warn_only)


class _Plan:
    """One index of a pass, sorted once."""

    def __init__(self, index: torch.Tensor):
        idx = index.to(torch.int64)
        order = torch.argsort(idx, stable=True)
        at, lengths = torch.unique_consecutive(idx[order], return_counts=True)
        if len(at) == len(idx):  # every element once: the indexed write is the sum
            self.order = self.lengths = None
            self.at = index if index.dtype in (torch.int32, torch.int64) else idx
        else:
            small = len(idx) < 2**31
            self.order = order.to(torch.int32) if small else order
            self.at, self.lengths = at, lengths

    def add(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        if self.order is None:
            dst[self.at] += src
            return
        # unsafe: the lengths are known to add up, and checking them would wait for the device
        runs = torch.segment_reduce(src.index_select(0, self.order), "sum",
                                    lengths=self.lengths, unsafe=True)
        dst[self.at] += runs

    def nbytes(self) -> int:
        held = [t for t in (self.order, self.at, self.lengths) if t is not None]
        return sum(t.numel() * t.element_size() for t in held)


class SegmentSums:
    """``dst[index] += src`` along the first axis, for a pass's fixed indices.

    ``plans``: sort each index once and sum by runs (:class:`_Plan`); the default on CUDA. Off
    (the default on CPU), it is ``index_add_`` (2-D ``src`` one column at a time, torch's CPU
    row-wise kernel being ~8x slower), under :func:`deterministic` where the device needs it.
    ``key`` names the index (the same key must always mean the same index); ``index`` may be a
    callable, evaluated only when a plan is made or when plans are off.
    """

    def __init__(self, device: torch.device, plans: bool | None = None):
        self.device = torch.device(device)
        self.plans = self.device.type == "cuda" if plans is None else bool(plans)
        self._cache: dict[Hashable, _Plan] = {}

    def context(self):
        """What a pass runs under: nothing with plans; otherwise deterministic ``index_add_``."""
        return contextlib.nullcontext() if self.plans else deterministic(self.device)

    def add(self, key: Hashable, dst: torch.Tensor, index: IndexLike, src: torch.Tensor):
        if not self.plans:
            idx = index() if callable(index) else index
            if src.dim() == 1:
                dst.index_add_(0, idx, src)
            else:
                for k in range(src.shape[1]):
                    dst[:, k].index_add_(0, idx, src[:, k])
            return dst
        plan = self._cache.get(key)
        if plan is None:
            plan = self._cache[key] = _Plan(index() if callable(index) else index)
        plan.add(dst, src)
        return dst

    def nbytes(self) -> int:
        """Device bytes held by the plans."""
        return sum(p.nbytes() for p in self._cache.values())
