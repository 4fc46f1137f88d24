"""The torch estimator's likelihood passes, checked so that a CUDA run can be trusted.

Every case of the fit (binary, rating scale, partial credit, response mode with a penalty,
weights, several chunks, a dense facet pair, the grid engine) is run twice and compared:

* on CPU, always: each engine's objective, gradient and Hessian against an independent dense
  NumPy computation from the exponential-family form (gradient = E[t] - t(x), Hessian =
  Cov(t), per observation), and the fit with tiny chunks (many index_add_ passes per
  evaluation) against the fit in one chunk;
* on CUDA, where a device exists: the same fit on ``cuda`` against ``cpu``: measures to 1e-9
  logits, SEs, covariances and scores to 1e-8 relative, the same number of Newton iterations,
  and two passes on the device equal bitwise (index_add_ in torch's deterministic mode).

Also on CPU: int8 codes, the per-observation pair index (lookup table and sorted routes), and
the grid pass split over threads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import irtpeer
import irtpeer.estimators._likelihood as lik
from irtpeer import ModelSpec, TorchMFRM
from irtpeer._design import FacetData, build_designs

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run on a GPU machine)")


def _weighted():
    """Partly duplicated judgments averaged: weights 1/2 on the duplicated cells, 1 elsewhere."""
    sim = irtpeer.simulate(models=5, questions=30, judges=3, dimensions="A", items_per_dimension=2,
                           categories=3, missing=0.1, seed=21)
    extra = sim.ratings.sample(frac=0.3, random_state=0).copy()
    extra["score"] = (extra["score"] + 1) % 3
    return irtpeer.load_ratings(pd.concat([sim.ratings, extra], ignore_index=True),
                                duplicates="mean")


def _ratings(categories, seed, **kw):
    sim = irtpeer.simulate(models=5, questions=30, judges=3, dimensions="A", items_per_dimension=2,
                           categories=categories, missing=0.15, seed=seed, **kw)
    return irtpeer.load_ratings(sim.ratings)


def _leaderboard():
    rng = np.random.default_rng(3)
    m, q = np.nonzero(rng.random((30, 60)) > 0.3)
    eta = rng.normal(0, 1, 30)[m] - rng.normal(0, 1, 60)[q]
    y = (rng.random(len(m)) < 1 / (1 + np.exp(-eta))).astype(int)
    return irtpeer.load_ratings(pd.DataFrame({"model": [f"m{i}" for i in m],
                                              "question": [f"q{i}" for i in q], "score": y}))


#: name -> (ratings factory, spec, estimator options, force the dense-pair path)
CASES = {
    "binary": (lambda: _ratings(2, 1), ModelSpec(), {}, False),
    "rating_scale": (lambda: _ratings(4, 2), ModelSpec(), {}, False),
    "partial_credit": (lambda: _ratings(4, 3), ModelSpec(scale="pcm", pcm_facet="item"), {}, False),
    "response_penalty": (lambda: _ratings(3, 4), ModelSpec(person_mode="response"),
                         {"penalty": 0.5}, False),
    "weights": (_weighted, ModelSpec(), {}, False),
    "dense_pair": (_leaderboard, ModelSpec(), {"solver": "iterative"}, True),
    # models x questions x judges x items with cells missing, through the grid engine
    "binary_grid": (lambda: _ratings(2, 6), ModelSpec(), {}, True),
}


def _fit(case, device="cpu", chunk_size=2_000_000, monkeypatch=None):
    make, spec, opts, dense = CASES[case]
    if dense:
        monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    return TorchMFRM(spec, device=device, chunk_size=chunk_size, **opts).fit(make()).calibration_


def assert_same(a, b, atol=1e-9, rtol=1e-8):
    ma, mb = a.measures, b.measures
    assert list(ma["element"]) == list(mb["element"])
    np.testing.assert_allclose(mb["measure"], ma["measure"], atol=atol, rtol=0)
    for col in ("se", "se_model"):
        np.testing.assert_allclose(mb[col], ma[col], rtol=rtol, atol=1e-14)
    for dim in a.cov:
        np.testing.assert_allclose(b.cov[dim].to_numpy(), a.cov[dim].to_numpy(), rtol=rtol,
                                   atol=1e-14)
    num = a.scores.select_dtypes("number").columns
    np.testing.assert_allclose(b.scores[num].to_numpy(), a.scores[num].to_numpy(), rtol=rtol,
                               atol=1e-12)
    assert list(a.convergence["iterations"]) == list(b.convergence["iterations"])
    assert (b.convergence["max_gradient"] < 1e-8).all()  # penalised gradient: at the optimum


# ------------------------------------------------------------- independent reference
def dense_reference(data: FacetData, params: np.ndarray):
    """-loglik, gradient and Hessian by the exponential-family identities, dense, per
    observation: log P(x) = params . t(x) - log Z with t(k) = k z + (-1[k >= j])_j."""
    n, K, off, A = data.n_params, max(data.K, 1), data.offsets, len(data.sizes)
    N = len(data.x)
    z = np.zeros((N, n))
    rows = np.arange(N)
    for a in range(A):
        z[rows, off[a] + np.asarray(data.idx[a], dtype=np.int64)] = 1.0 if a == 0 else -1.0
    t = np.zeros((K + 1, N, n))
    for k in range(K + 1):
        t[k] = k * z
        if data.K > 1:
            base = off[A] + (0 if data.pcm is None
                             else np.asarray(data.idx[data.pcm], dtype=np.int64) * K)
            for j in range(1, k + 1):
                t[k][rows, base + j - 1] -= 1.0
    psi = np.einsum("kin,n->ik", t, params)
    logZ = np.logaddexp.reduce(psi, axis=1)
    P = np.exp(psi - logZ[:, None])
    x = np.asarray(data.x, dtype=np.int64)
    w = np.ones(N) if data.w is None else np.asarray(data.w)
    f = -np.sum(w * (psi[rows, x] - logZ))
    Et = np.einsum("ik,kin->in", P, t)
    g = np.einsum("i,in->n", w, Et - t[x, rows])
    H = np.einsum("i,ik,kin,kim->nm", w, P, t, t) - np.einsum("i,in,im->nm", w, Et, Et)
    return f, g, H


def case_pass(case, monkeypatch):
    """A case's design, parameters to evaluate at and its dense reference (f, g, H)."""
    make, spec, _opts, dense = CASES[case]
    if dense:
        monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    data = build_designs(make(), spec)[0].data
    params = np.random.default_rng(5).normal(0, 0.7, data.n_params)
    return data, params, dense_reference(data, params)


def assert_pass_equals(ev, data, reference):
    f, g, H = reference
    assert ev.f == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(ev.g, g, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ev.full_hessian(data.offsets).toarray(), H, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [2_000_000, 97])
def test_pass_equals_dense_numpy_reference(case, chunk, monkeypatch):
    data, params, reference = case_pass(case, monkeypatch)
    dense = CASES[case][3]
    engines = [lik.LikelihoodEngine(data, chunk=chunk)]
    if dense:
        assert lik.GridLikelihoodEngine.suitable(data)
        engines.append(lik.GridLikelihoodEngine(data, chunk=chunk))
    for eng in engines:
        assert all(ix.dtype != torch.int64 for ix in getattr(eng, "idx", []))  # no int64 copy
        ev = eng.evaluate(params)
        assert_pass_equals(ev, data, reference)
        if case == "dense_pair" and isinstance(eng, lik.LikelihoodEngine):
            assert ev.dense and [p[2] for p in eng.pairs] == ["block"]
        gonly = eng.evaluate(params, need_hessian=False)
        assert gonly.f == ev.f and gonly.H is None
        np.testing.assert_allclose(gonly.g, ev.g, rtol=1e-14, atol=1e-14)
        mem = eng.memory()
        assert 0 < mem["bytes_per_obs"] < 200


def test_smaller_codes_are_widened_per_chunk_only():
    """int8 codes (a facet of few elements) must not be taken as a boolean mask."""
    data = build_designs(_ratings(4, 2), ModelSpec())[0].data
    small = FacetData(idx=[ix.astype(np.int8) for ix in data.idx], sizes=data.sizes, x=data.x,
                      K=data.K)
    params = np.random.default_rng(1).normal(0, 0.5, data.n_params)
    a = lik.LikelihoodEngine(data, chunk=50).evaluate(params)
    b = lik.LikelihoodEngine(small, chunk=50).evaluate(params)
    assert a.f == b.f
    np.testing.assert_array_equal(a.g, b.g)
    np.testing.assert_array_equal(a.H.toarray(), b.H.toarray())


@pytest.mark.parametrize("case", list(CASES))
def test_many_chunks_fit_equals_one_chunk(case, monkeypatch):
    one = _fit(case, monkeypatch=monkeypatch)
    many = _fit(case, chunk_size=113, monkeypatch=monkeypatch)
    assert_same(one, many)
    conv = many.convergence.iloc[0]
    assert conv["passes"] >= conv["iterations"] + 1
    assert conv["device_bytes_per_obs"] > 0


@needs_cuda
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk", [2_000_000, 113])
def test_cuda_fit_equals_cpu_fit(case, chunk, monkeypatch):
    cpu = _fit(case, "cpu", chunk, monkeypatch)
    gpu = _fit(case, "cuda", chunk, monkeypatch)
    assert gpu.options["device"].startswith("cuda")
    assert_same(cpu, gpu)


@needs_cuda
def test_cuda_pass_is_deterministic_and_equals_cpu(monkeypatch):
    data = build_designs(_ratings(4, 3), ModelSpec(scale="pcm", pcm_facet="item"))[0].data
    params = np.random.default_rng(2).normal(0, 0.5, data.n_params)
    cpu = lik.LikelihoodEngine(data, chunk=101).evaluate(params)
    eng = lik.LikelihoodEngine(data, device="cuda", chunk=101)
    a, b = eng.evaluate(params), eng.evaluate(params)
    assert a.f == b.f
    np.testing.assert_array_equal(a.g, b.g)
    np.testing.assert_array_equal(a.H.data, b.H.data)
    np.testing.assert_allclose(a.g, cpu.g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.H.toarray(), cpu.H.toarray(), rtol=1e-12, atol=1e-12)


def test_cuda_passes_run_with_deterministic_index_add():
    """index_add_ on CUDA sorts instead of adding atomically only in deterministic mode: the
    engine switches it on for a pass and restores the user's setting (checked without a GPU:
    the switch only looks at the device type)."""
    assert not torch.are_deterministic_algorithms_enabled()
    with lik.deterministic(torch.device("cuda")):
        assert torch.are_deterministic_algorithms_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with lik.deterministic(torch.device("cpu")):
        assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("case", ["binary_grid", "dense_pair"])
def test_grid_pass_split_over_threads_equals_one_thread(case, monkeypatch):
    make, spec, _opts, _dense = CASES[case]
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    monkeypatch.setattr(lik, "GRID_BLOCK_CELLS", 64)  # many blocks
    data = build_designs(make(), spec)[0].data
    eng = lik.GridLikelihoodEngine(data)
    params = np.random.default_rng(4).normal(0, 0.5, data.n_params)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = eng.evaluate(params)
        torch.set_num_threads(3)
        three = eng.evaluate(params)
    finally:
        torch.set_num_threads(before)
    assert three.f == pytest.approx(one.f, rel=1e-14)
    np.testing.assert_allclose(three.g, one.g, rtol=1e-12, atol=1e-12)
    off = data.offsets
    np.testing.assert_allclose(three.full_hessian(off).toarray(), one.full_hessian(off).toarray(),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("route", ["per_observation_index", "sorted_unique"])
@pytest.mark.parametrize("case", ["rating_scale", "partial_credit", "response_penalty", "weights"])
def test_pair_index_per_observation_equals_reference(case, route, monkeypatch):
    """The compact pair index of large facet pairs (an int32 cell per observation, from a lookup
    table or from sorting when a pair has too many cells for a bitmap) gives the same pass."""
    make, spec, _opts, _dense = CASES[case]
    monkeypatch.setattr(lik, "LUT_MIN_CELLS", 0)
    monkeypatch.setattr(lik, "LUT_CELLS_PER_OBS", 0.0)
    if route == "sorted_unique":
        monkeypatch.setattr(lik, "_DENSE_PAIR_LIMIT", 0)
    data = build_designs(make(), spec)[0].data
    eng = lik.LikelihoodEngine(data, chunk=101)
    assert {p[2] for p in eng.pairs} == {"inverse"}
    params = np.random.default_rng(8).normal(0, 0.6, data.n_params)
    f, g, H = dense_reference(data, params)
    ev = eng.evaluate(params)
    assert ev.f == pytest.approx(f, rel=1e-12)
    np.testing.assert_allclose(ev.g, g, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ev.H.toarray(), H, rtol=1e-10, atol=1e-10)
