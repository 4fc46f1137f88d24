"""The everyday path (models x questions x judges x items, binary, one rating per cell) takes
the grid engine with its element sums counted on the grid; these must be the sums over the
observations exactly, and the fit the one the general engine gives (the reference)."""

from __future__ import annotations

import numpy as np
import pytest

import irtpeer
import irtpeer.estimators._likelihood as lik
import irtpeer.estimators._torch as tmod
from irtpeer import ModelSpec, TorchMFRM
from irtpeer._design import FacetData, build_designs


def _crossed(missing: float, items: int = 2, seed: int = 4):
    sim = irtpeer.simulate(models=6, questions=50, judges=3, dimensions="A",
                           items_per_dimension=items, categories=2, missing=missing, seed=seed)
    return sim.ratings


@pytest.mark.parametrize("missing", [0.0, 0.25])
@pytest.mark.parametrize("items", [1, 2])
def test_grid_element_sums_equal_the_sums_over_the_observations(monkeypatch, missing, items):
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    data = build_designs(irtpeer.load_ratings(_crossed(missing, items)), ModelSpec())[0].data
    ref = tmod._element_sums(data)
    eng = lik.GridLikelihoodEngine(data)
    assert eng.complete == (missing == 0.0)
    cnt, tot = eng.element_sums()
    for a in range(len(data.sizes)):
        np.testing.assert_array_equal(cnt[a], ref.cnt[a])
        np.testing.assert_array_equal(tot[a], ref.tot[a])
        assert cnt[a].dtype == np.float64 and tot[a].dtype == np.float64
    # the totals the engine fits with are those counted at its first pass without them
    np.testing.assert_array_equal(eng.totals.numpy(), lik.GridLikelihoodEngine(data)._totals())


def test_grid_element_sums_in_row_slices(monkeypatch):
    """Large grids are summed a slice of persons at a time: the same sums."""
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    data = build_designs(irtpeer.load_ratings(_crossed(0.25)), ModelSpec())[0].data
    whole = lik.GridLikelihoodEngine(data).element_sums()
    monkeypatch.setattr(lik, "GRID_SUM_CELLS", 1)  # one person per slice
    sliced = lik.GridLikelihoodEngine(data).element_sums()
    for a, b in zip(whole, sliced):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("penalty", [0.0, 0.4])
def test_everyday_fit_with_grid_sums_equals_the_general_engine(monkeypatch, penalty):
    df = _crossed(0.2, seed=7)
    # an extreme judge (all maximum scores): set aside, so the engine is rebuilt on the rest
    df.loc[df["judge"] == df["judge"].iloc[0], "score"] = df["score"].max()
    general = TorchMFRM(penalty=penalty).fit(irtpeer.load_ratings(df)).calibration_
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    data = build_designs(irtpeer.load_ratings(df), ModelSpec())[0].data
    assert lik.GridLikelihoodEngine.suitable(data)
    engine, _ = tmod._engine_and_sums(data, "cpu", 2_000_000)
    assert isinstance(engine, lik.GridLikelihoodEngine)
    grid = TorchMFRM(penalty=penalty).fit(irtpeer.load_ratings(df)).calibration_
    ma, mb = general.measures, grid.measures
    assert list(ma["status"]) == list(mb["status"])
    assert (ma["status"] == "extreme_max").sum() == 1  # set aside without a penalty
    # the fit ran on the grid engine (about a byte per observation), the reference did not
    grid_bytes = grid.convergence["device_bytes_per_obs"].iloc[0]
    assert grid_bytes < general.convergence["device_bytes_per_obs"].iloc[0]
    np.testing.assert_allclose(mb["measure"], ma["measure"], atol=1e-8, rtol=0)
    np.testing.assert_allclose(mb["se"], ma["se"], rtol=1e-6)
    np.testing.assert_array_equal(mb["count"], ma["count"])
    np.testing.assert_array_equal(mb["total"], ma["total"])
    assert grid.convergence["objective"].iloc[0] == pytest.approx(
        general.convergence["objective"].iloc[0], rel=1e-12)


def test_duplicated_cells_fall_back_to_the_sums_over_codes(monkeypatch):
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    data = build_designs(irtpeer.load_ratings(_crossed(0.0)), ModelSpec())[0].data
    dup = FacetData(idx=[np.concatenate([ix, ix[:3]]) for ix in data.idx], sizes=data.sizes,
                    x=np.concatenate([data.x, data.x[:3]]), K=data.K)
    engine, sums = tmod._engine_and_sums(dup, "cpu", 2_000_000)
    assert engine is None
    np.testing.assert_array_equal(sums.cnt[0], tmod._element_sums(dup).cnt[0])


def test_narrow_codes_give_the_same_fit_with_extremes_and_partial_credit(monkeypatch):
    """Design codes may come in the narrowest type that holds each facet's codes (views of the
    table's categorical codes); the estimator's own position arithmetic (offset + code when an
    extreme element is placed, code x categories for the partial-credit counts) must not wrap.
    Reference: the same fit from int64 codes."""
    import dataclasses

    sim = irtpeer.simulate(models=6, questions=150, judges=3, dimensions="A",
                           items_per_dimension=2, categories=4, seed=11)
    df = sim.ratings.copy()
    df.loc[df["question"] == df["question"].iloc[0], "score"] = df["score"].max()  # extreme
    spec = ModelSpec(scale="pcm:judge")
    real = tmod.build_designs

    def recoded(kind):
        def build(ratings, spec):
            out = []
            for d in real(ratings, spec):
                idx = [ix.astype(np.int64) if kind == "wide" else
                       ix.astype(np.int8 if ix.max() < 127 else np.int16) for ix in d.data.idx]
                out.append(dataclasses.replace(d, data=dataclasses.replace(d.data, idx=idx)))
            return out
        return build

    fits = {}
    for kind in ("wide", "narrow"):
        monkeypatch.setattr(tmod, "build_designs", recoded(kind))
        fits[kind] = TorchMFRM(spec).fit(irtpeer.load_ratings(df)).calibration_
    a, b = fits["wide"].measures, fits["narrow"].measures
    assert (a["status"] == "extreme_max").sum() == 1
    assert list(a["status"]) == list(b["status"])
    np.testing.assert_allclose(b["measure"], a["measure"], atol=1e-10, rtol=0)
    np.testing.assert_allclose(b["se"], a["se"], rtol=1e-10)
    np.testing.assert_array_equal(b["count"], a["count"])
