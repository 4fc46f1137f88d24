"""Sums by element with plans (each index sorted once, summed by runs): the CUDA default, forced
here on CPU so that every path of a likelihood pass is checked without a GPU.

References: torch's ``index_add_`` on CPU (adds in observation order) and the dense NumPy
likelihood of tests/test_cuda.py; equality of whole fits with the default CPU path."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
from test_cuda import CASES, assert_pass_equals, assert_same, case_pass

import irtpeer.estimators._likelihood as lik
from irtpeer.estimators._segsum import SegmentSums


@pytest.mark.parametrize("kind", ["runs", "distinct", "two_columns"])
def test_plan_sums_equal_index_add(kind):
    rng = np.random.default_rng(0)
    n, size = 5_000, 40
    if kind == "distinct":  # every element at most once: the indexed write is the sum
        index = torch.as_tensor(rng.permutation(3 * n)[:n], dtype=torch.int32)
        size = 3 * n
    else:  # four elements with runs of ~1,000 (a judge facet) and 36 rarely seen ones
        index = torch.as_tensor(np.where(rng.random(n) < 0.8, rng.integers(0, 4, n),
                                         rng.integers(4, size, n)), dtype=torch.int32)
    shape = (n, 3) if kind == "two_columns" else (n,)
    src = torch.as_tensor(rng.normal(size=shape))
    expect = torch.zeros((size, *shape[1:]), dtype=torch.float64).index_add_(0, index, src)
    sums = SegmentSums(torch.device("cpu"), plans=True)
    for _ in range(2):  # the first call makes the plan, the second uses it
        got = sums.add("i", torch.zeros_like(expect), index, src)
        torch.testing.assert_close(got, expect, rtol=1e-13, atol=1e-13)
    plan = sums._cache["i"]
    assert (plan.order is None) == (kind == "distinct")
    assert sums.nbytes() >= (0 if kind == "distinct" else 4 * n)


def test_a_callable_index_is_evaluated_once():
    calls = []

    def index():
        calls.append(1)
        return torch.tensor([0, 1, 1, 2])

    sums = SegmentSums(torch.device("cpu"), plans=True)
    for _ in range(3):
        out = sums.add("k", torch.zeros(3, dtype=torch.float64), index,
                       torch.ones(4, dtype=torch.float64))
    assert out.tolist() == [1.0, 2.0, 1.0] and len(calls) == 1


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [2_000_000, 97])
def test_pass_with_plans_equals_the_dense_reference_and_repeats_bit_for_bit(case, chunk,
                                                                           monkeypatch):
    data, params, reference = case_pass(case, monkeypatch)
    eng = lik.LikelihoodEngine(data, chunk=chunk)
    eng.sums = SegmentSums(eng.device, plans=True)
    first = eng.evaluate(params)
    assert eng.sums.nbytes() > 0
    again = eng.evaluate(params)
    assert_pass_equals(first, data, reference)
    assert again.f == first.f and np.array_equal(again.g, first.g)
    assert np.array_equal(again.H.data, first.H.data)
    for (a, b, x), (_, _, y) in zip(first.dense, again.dense):
        assert np.array_equal(x, y), (a, b)


@pytest.mark.parametrize("case", ["rating_scale", "partial_credit", "weights", "response_penalty"])
def test_fit_with_plans_equals_the_cpu_fit(case, monkeypatch):
    from test_cuda import _fit

    expect = _fit(case, monkeypatch=monkeypatch)
    monkeypatch.setattr(lik, "SegmentSums", partial(SegmentSums, plans=True))
    got = _fit(case, chunk_size=500, monkeypatch=monkeypatch)
    assert_same(expect, got)
