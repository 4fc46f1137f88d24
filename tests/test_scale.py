"""The large-design path of the torch estimator, forced on small designs where the direct path
(nested Schur complements, factorised densely) is the reference: the iterative solver (CG on the
Schur complement), dense facet-pair blocks, standard errors by iterative solves, --se-facets."""

import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

import irtpeer
import irtpeer.estimators._cg as cg
import irtpeer.estimators._likelihood as lik
import irtpeer.estimators._torch as tmod
from irtpeer import IrtpeerError, ModelSpec, TorchMFRM
from irtpeer.estimators._blocksolve import NotPositiveDefinite


def fit(df, spec=None, **kw):
    return TorchMFRM(spec, device="cpu", **kw).fit(irtpeer.load_ratings(df)).calibration_


def leaderboard(models, items, missing, seed, pattern="random"):
    """Binary models x items responses with cells missing at random or in blocks."""
    rng = np.random.default_rng(seed)
    theta, b = rng.normal(0, 1, models), rng.normal(0, 1, items)
    if pattern == "random":
        keep = rng.random((models, items)) >= missing
    else:  # each model answers a contiguous, overlapping window of items (linked chain)
        keep = np.zeros((models, items), dtype=bool)
        width = int(items * (1 - missing))
        for m in range(models):
            start = (m * (items - width)) // max(models - 1, 1)
            keep[m, start : start + width] = True
    m, q = np.nonzero(keep)
    y = (rng.random(len(m)) < 1 / (1 + np.exp(-(theta[m] - b[q])))).astype(int)
    return pd.DataFrame({"model": [f"m{i:03d}" for i in m], "question": [f"q{i:04d}" for i in q],
                         "score": y}), theta, b


def assert_same_fit(a, b, se_rtol=1e-6):
    ma, mb = a.measures, b.measures
    assert (ma["element"] == mb["element"]).all()
    np.testing.assert_allclose(mb["measure"], ma["measure"], atol=1e-8, rtol=0)
    np.testing.assert_allclose(mb["se"], ma["se"], rtol=se_rtol)
    np.testing.assert_allclose(mb["se_model"], ma["se_model"], rtol=1e-7)
    for dim in a.cov:
        np.testing.assert_allclose(b.cov[dim].to_numpy(), a.cov[dim].to_numpy(),
                                   rtol=se_rtol, atol=1e-12)
    assert list(mb["status"]) == list(ma["status"])


@pytest.mark.parametrize("penalty", [0.0, 0.3])
def test_iterative_equals_direct_multifacet_missing_data(penalty):
    sim = irtpeer.simulate(models=25, questions=60, judges=3, dimensions="A", items_per_dimension=2,
                           missing=0.35, seed=4)
    a = fit(sim.ratings, penalty=penalty, solver="direct")
    b = fit(sim.ratings, penalty=penalty, solver="iterative")
    assert a.convergence["solver"].iloc[0] == "direct"
    assert b.convergence["solver"].iloc[0] == "iterative"
    assert b.convergence["cg_products"].iloc[0] > 0
    assert_same_fit(a, b)
    assert b.convergence["max_gradient"].iloc[0] < 1e-8  # the same optimum, to the same criterion


def test_iterative_rating_scale_with_extremes_and_block_missingness():
    # partial-credit thresholds (small dense blocks of the preconditioner), extreme elements
    # set aside and placed, and a chain of overlapping windows instead of random missingness
    sim = irtpeer.simulate(models=12, questions=50, judges=2, dimensions="A", items_per_dimension=3,
                           categories=4, missing=0.0, seed=8)
    df = sim.ratings
    rng = np.random.default_rng(0)
    q = pd.Categorical(df["question"]).codes
    m = pd.Categorical(df["model"]).codes
    df = df[np.abs(q - m * 4) < 25 + rng.integers(0, 3, len(df))].copy()  # banded (chain) design
    top = df["model"] == df["model"].iloc[0]
    df.loc[top, "score"] = df["score"].max()  # an extreme (all-maximum) model
    spec = ModelSpec(scale="pcm:item")
    a = fit(df, spec, solver="direct")
    b = fit(df, spec, solver="iterative")
    assert (b.measures["status"] == "extreme_max").sum() >= 1
    assert_same_fit(a, b)


def test_dense_pair_blocks_give_the_same_hessian_and_fit(monkeypatch):
    df, _, _ = leaderboard(40, 90, 0.3, seed=1)
    a = fit(df, solver="direct")
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)  # keep the model x question block dense
    ratings = irtpeer.load_ratings(df)
    design = irtpeer._design.build_designs(ratings, ModelSpec())[0]
    eng = lik.LikelihoodEngine(design.data)
    assert [p[2] for p in eng.pairs] == ["block"]
    x = np.random.default_rng(0).normal(size=design.data.n_params)
    ev = eng.evaluate(x)
    assert len(ev.dense) == 1 and ev.dense[0][2].shape == (40, 90)
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1 << 40)
    ref = lik.LikelihoodEngine(design.data).evaluate(x)
    assert not ref.dense
    np.testing.assert_allclose(ev.full_hessian(design.data.offsets).toarray(), ref.H.toarray(),
                               rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ev.g, ref.g, rtol=1e-13)
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    assert fit(df).convergence["solver"].iloc[0] == "direct"  # auto: small enough to factorise
    b = fit(df, solver="iterative")
    assert_same_fit(a, b)
    monkeypatch.setattr(tmod, "DIRECT_MAX_FLOPS", 1e3)  # as if forming S were costly
    assert fit(df).convergence["solver"].iloc[0] == "iterative"


def test_se_by_iterative_solves_when_the_schur_complement_is_too_big(monkeypatch):
    sim = irtpeer.simulate(models=20, questions=70, judges=3, dimensions="A", items_per_dimension=2,
                           categories=3, missing=0.3, seed=5)
    a = fit(sim.ratings, solver="direct")
    monkeypatch.setattr(cg, "DENSE_S_MAX", 0)  # as if S were too big to form
    b = fit(sim.ratings, solver="iterative")  # default: model SEs exact, others not computed
    assert b.convergence["se_method"].iloc[0].startswith("exact (iterative solves")
    mb = b.measures
    assert mb.loc[mb["facet"] == "model", "se"].notna().all()
    assert mb.loc[mb["facet"] != "model", "se"].isna().all()
    assert mb["se_model"].notna().all()
    assert any("--se-facets" in n for n in b.notes)
    sel = a.measures["facet"] == "model"
    np.testing.assert_allclose(mb.loc[sel, "se"], a.measures.loc[sel, "se"], rtol=1e-6)
    np.testing.assert_allclose(b.cov["A"].to_numpy(), a.cov["A"].to_numpy(), rtol=1e-6, atol=1e-12)
    c = fit(sim.ratings, solver="iterative", se_facets="model,question,judge,item,threshold")
    assert_same_fit(a, c)


def test_auto_picks_iterative_when_forming_the_remainder_is_costly(monkeypatch):
    df, theta, _ = leaderboard(30, 120, 0.3, seed=2)
    assert fit(df).convergence["solver"].iloc[0] == "direct"  # small: direct
    monkeypatch.setattr(tmod, "DIRECT_MAX_FLOPS", 1e3)
    cal = fit(df)
    assert cal.convergence["solver"].iloc[0] == "iterative"
    est = cal.facet("model").set_index("element").loc[[f"m{i:03d}" for i in range(30)], "measure"]
    assert np.corrcoef(est, theta)[0, 1] > 0.9  # recovers the simulated abilities


def test_se_facets_names_are_checked():
    sim = irtpeer.simulate(models=4, questions=10, judges=2, dimensions="A", seed=1)
    with pytest.raises(IrtpeerError, match="'modle', not a facet"):
        fit(sim.ratings, se_facets="modle")
    with pytest.raises(IrtpeerError, match="solver"):
        fit(sim.ratings, solver="cholesky")


def test_cli_se_facets_as_a_user_types_it(tmp_path, monkeypatch):
    df, _, _ = leaderboard(30, 80, 0.3, seed=3)
    path = tmp_path / "lb.parquet"
    df.to_parquet(path)
    res = subprocess.run([sys.executable, "-m", "irtpeer", "score", str(path), "--se-facets",
                          "model", "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    conv = pd.read_csv(tmp_path / "out" / "convergence.csv")
    assert conv["se_method"].iloc[0].startswith("exact")
    measures = pd.read_csv(tmp_path / "out" / "measures.csv")
    assert measures.loc[measures["facet"] == "model", "se"].notna().all()
    bad = subprocess.run([sys.executable, "-m", "irtpeer", "score", str(path), "--se-facets",
                          "judge", "--out", str(tmp_path / "o2")], capture_output=True, text=True, check=False,
                         timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "'judge', not a facet" in bad.stderr


def test_grid_engine_equals_the_general_engine_and_fits_the_same(monkeypatch):
    df, _, _ = leaderboard(40, 150, 0.3, seed=6, pattern="random")
    a = fit(df, solver="direct")
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    design = irtpeer._design.build_designs(irtpeer.load_ratings(df), ModelSpec())[0]
    grid = lik.make_engine(design.data)
    assert isinstance(grid, lik.GridLikelihoodEngine)
    x = np.random.default_rng(1).normal(size=design.data.n_params)
    ev, ref = grid.evaluate(x), lik.LikelihoodEngine(design.data).evaluate(x)
    assert ev.f == pytest.approx(ref.f, rel=1e-13)
    np.testing.assert_allclose(ev.g, ref.g, rtol=1e-11, atol=1e-11)
    off = design.data.offsets
    np.testing.assert_allclose(ev.full_hessian(off).toarray(), ref.full_hessian(off).toarray(),
                               rtol=1e-12, atol=1e-14)
    b = fit(df, solver="iterative")  # grid engine + iterative solver
    assert b.convergence["solver"].iloc[0] == "iterative"
    assert_same_fit(a, b)
    # duplicated cells (kept as independent judgments) fall back to the general engine
    dup = pd.concat([df, df.iloc[:5]], ignore_index=True)
    d2 = irtpeer._design.build_designs(irtpeer.load_ratings(dup, duplicates="keep"), ModelSpec())[0]
    assert not isinstance(lik.make_engine(d2.data), lik.GridLikelihoodEngine)


@pytest.mark.parametrize("items", [2, 1])
def test_grid_engine_for_a_crossed_multifacet_design(monkeypatch, items):
    # models x questions x judges (x items), binary, 20 % of cells missing: the everyday design
    sim = irtpeer.simulate(models=6, questions=40, judges=3, dimensions="A",
                           items_per_dimension=items, categories=2, missing=0.2, seed=9)
    a = fit(sim.ratings, penalty=0.5, solver="direct")
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)
    design = irtpeer._design.build_designs(irtpeer.load_ratings(sim.ratings), ModelSpec())[0]
    assert len(design.data.sizes) == 2 + items and design.data.K == 1
    grid = lik.make_engine(design.data)
    assert isinstance(grid, lik.GridLikelihoodEngine)
    x = np.random.default_rng(2).normal(size=design.data.n_params)
    ev, ref = grid.evaluate(x), lik.LikelihoodEngine(design.data).evaluate(x)
    assert ev.f == pytest.approx(ref.f, rel=1e-13)
    np.testing.assert_allclose(ev.g, ref.g, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(ev.H.toarray(), ref.full_hessian(design.data.offsets).toarray(),
                               rtol=1e-12, atol=1e-13)
    assert grid.evaluate(x, need_hessian=False).f == pytest.approx(ref.f, rel=1e-13)
    for solver in ("direct", "iterative"):
        assert_same_fit(a, fit(sim.ratings, penalty=0.5, solver=solver))


def test_schur_plan_reused_across_newton_iterations_gives_the_same_solves():
    """The direct solver's plan (block chosen, sub-matrix patterns) is found on the first
    Hessian and reused while the pattern stays; a different pattern resets it."""
    import scipy.sparse as sp

    from irtpeer.estimators._blocksolve import BlockSchurSolver, SchurPlan

    plan, found = SchurPlan(), []
    rng = np.random.default_rng(3)
    for seed in (1, 1, 2):  # the same design at two points, then another design
        sim = irtpeer.simulate(models=5, questions=80 + seed, judges=3, dimensions="A",
                               items_per_dimension=2, missing=0.2, seed=seed)
        design = irtpeer._design.build_designs(irtpeer.load_ratings(sim.ratings), ModelSpec())[0]
        H = lik.LikelihoodEngine(design.data).evaluate(
            rng.normal(0, 0.5, design.data.n_params)).H + 0.1 * sp.identity(design.data.n_params)
        H = sp.csr_matrix(H)
        off = design.data.offsets
        blocks = [np.arange(off[a], off[a + 1]) for a in range(len(off) - 1)]
        g = rng.normal(size=H.shape[0])
        with_plan = BlockSchurSolver(H, blocks, min_eliminate=10, plan=plan)
        without = BlockSchurSolver(H, blocks, min_eliminate=10)
        np.testing.assert_allclose(with_plan.solve(g), without.solve(g), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(with_plan.solve(g), np.linalg.solve(H.toarray(), g), rtol=1e-9)
        np.testing.assert_allclose(with_plan.diag_inv(), without.diag_inv(), rtol=1e-12)
        found.append(plan._subs)
    assert found[1] is found[0]  # reused for the same pattern
    assert found[2] is not found[1]  # found again for a new one


def test_averaged_duplicates_read_only_weights_fit_without_warning(tmp_path):
    # Ratings.weights() of a copy-on-write frame is a read-only view: torch must not be handed
    # it as if writable ("The given NumPy array is not writable"). A fresh interpreter, because
    # torch prints that warning once per process.
    code = (
        "import warnings, pandas as pd, irtpeer\n"
        "sim = irtpeer.simulate(models=6, questions=20, judges=2, dimensions='A', seed=1)\n"
        "df = pd.concat([sim.ratings, sim.ratings.iloc[:30]], ignore_index=True)\n"
        "r = irtpeer.load_ratings(df, duplicates='mean')\n"
        "assert r.weights() is not None and not r.weights().flags.writeable\n"
        "warnings.simplefilter('error')\n"
        "cal = irtpeer.TorchMFRM(device='cpu').fit(r).calibration_\n"
        "print(cal.measures['measure'].notna().sum())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) > 0


def test_se_route_compares_the_cost_of_forming_s_with_the_solves():
    # dense: n_e n_r^2 / 2 (lower triangle of S) + n_r^3 (factorise, invert) [+ n_e n_r^2 when
    # eliminated elements are asked for]; iterative: iterations x product x elements asked for
    ne, nr, prod, it = 1000, 100, 1e4, 10
    dense = 0.5 * ne * nr**2 + nr**3  # 6e6 multiply-adds
    assert dense == 6e6
    assert cg.se_route(ne, nr, 60, 0, prod, it) == "dense"  # 60 solves cost 6e6 too
    assert cg.se_route(ne, nr, 59, 0, prod, it) == "iterative"
    assert cg.se_route(ne, nr, 100, 1, prod, it) == "iterative"  # + 1e7 for eliminated ones
    assert cg.se_route(ne, nr, 100, 200, prod, it) == "dense"
    # the complete 11,785 x 36,259 leaderboard, model se: forming S (~2.5e12 + 1.6e12)
    # against 11,785 solves of ~10 products of 2 x 427 M multiply-adds (~1e14)
    big = {"n_elim": 36_259, "n_rest": 11_785, "want_elim": 0, "product": 2 * 11_785 * 36_259.0}
    assert cg.se_route(**big, want_rest=11_785, iters=10) == "dense"
    assert cg.se_route(**big, want_rest=20, iters=10) == "iterative"  # a few elements: solves
    assert cg.se_route(36_259, 25_000, 25_000, 0, 1e9, 10) == "iterative"  # S would not fit


def _leaderboard_hessian(models, items, seed=0):
    """Free-coordinate Hessian of a complete binary models x items leaderboard (last item
    dropped), the model x item block as a dense piece, built a block of rows at a time."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    theta, b = rng.normal(size=models), rng.normal(size=items)
    B = np.empty((models, items))
    for s in range(0, models, 256):
        p = 1 / (1 + np.exp(-(theta[s : s + 256, None] - b[None, :])))
        B[s : s + 256] = -p * (1 - p)
    n = models + items - 1
    Hs = sp.diags(np.r_[-B.sum(1), -B.sum(0)[:-1]]).tocsr()
    dense = [(np.arange(models), np.r_[np.arange(models, n), -1], B)]
    return Hs, dense, [np.arange(models), np.arange(models, n)]


#: where the dense Schur complement lives: None = the host (LAPACK in place), "cpu" = the torch
#: code that a GPU runs (:class:`_DeviceCholesky`), here on the CPU; and a GPU when there is one
FACTOR_DEVICES = [None, "cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: (factor device, where the dense Hessian block lives: None = a NumPy array, else a torch
#: tensor on that device, as a GPU fit leaves it)
FACTOR_CASES = [(None, None), ("cpu", None), ("cpu", "cpu")] + (
    [("cuda", None), ("cuda", "cuda")] if torch.cuda.is_available() else [])


def _on(dense, block_device):
    if block_device is None:
        return dense
    return [(r, c, torch.from_numpy(B).to(block_device)) for r, c, B in dense]


@pytest.mark.parametrize("device, block_device", FACTOR_CASES)
def test_forced_se_routes_give_the_same_inverse_diagonal(monkeypatch, device, block_device):
    Hs, dense, blocks = _leaderboard_hessian(37, 90)
    n = Hs.shape[0]
    H = Hs.toarray()
    H[:37, 37:] += dense[0][2][:, :-1]
    H[37:, :37] += dense[0][2][:, :-1].T
    Hi = np.linalg.inv(H)
    # several chunks of C's rows and blocks of S's columns (S is formed in pieces, in place)
    monkeypatch.setattr(cg, "_CHUNK_CELLS", 37 * 7)
    monkeypatch.setattr(cg, "_BLOCK_CELLS", 37 * 5)
    want = np.zeros(n, dtype=bool)
    want[:37] = want[[40, 99]] = True  # all models and two items (eliminated)
    it = cg.IterativeSchurSolver(Hs, _on(dense, block_device), blocks).diag_inv(
        want, route="iterative")
    S = cg.IterativeSchurSolver(Hs, _on(dense, block_device), blocks, device=device)
    assert len(S.be) == 89 and S.product == 37 + 2 * 37 * 90 + 89  # E, C both ways, D^-1
    de = S.diag_inv(want, route="dense")
    assert S.se_method.startswith("exact (Schur complement")
    np.testing.assert_allclose(de[want], np.diag(Hi)[want], rtol=1e-10)
    np.testing.assert_allclose(it[want], de[want], rtol=1e-8)
    np.testing.assert_allclose(S.inverse_block(np.arange(37), None), Hi[:37, :37], rtol=1e-10)
    g = np.random.default_rng(1).normal(size=(n, 2))
    F = cg.IterativeSchurSolver(Hs, _on(dense, block_device), blocks, device=device)
    F.factorise_dense()  # solves through the Cholesky factor, one right-hand side or several
    np.testing.assert_allclose(F.solve(g), Hi @ g, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(F.solve(g[:, 0]), Hi @ g[:, 0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(S.solve(g), Hi @ g, rtol=1e-9, atol=1e-12)  # via S^-1 now
    view = S.inverse_block(np.arange(37), None)
    assert not view.flags.writeable  # the solver's own S^-1, not a copy
    own = S.inverse_block(np.arange(37), None, consume=True)  # handed over: the last use
    assert own.flags.writeable and np.shares_memory(own, view) and S._Sinv is None
    np.testing.assert_allclose(own, Hi[:37, :37], rtol=1e-10)
    np.testing.assert_allclose(S.solve(g), Hi @ g, rtol=1e-8, atol=1e-12)  # CG again


class _TorchFactorOnCpu(cg.IterativeSchurSolver):
    """The solver as a GPU fit makes it (S formed, factorised, inverted by torch), on the CPU."""

    blocks_seen: ClassVar[list] = []

    def __init__(self, *args, device=None, **kw):
        super().__init__(*args, device="cpu", **kw)
        self.blocks_seen.extend(type(B) for _, _, B in args[1])


@pytest.mark.parametrize("block_on_device", [False, True])
def test_fit_with_the_device_factor_equals_the_host_factor(monkeypatch, block_on_device):
    """A GPU fit's solver path on the CPU: the Schur complement by torch and (``True``) the
    grid engine's models x items block left a torch tensor, as on a GPU."""
    df, _, _ = leaderboard(40, 150, 0.3, seed=7)
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)  # the model x question block dense
    host = fit(df, solver="iterative", se_facets="model,question")
    init = lik.GridLikelihoodEngine.__init__

    def engine_init(self, *args, **kw):
        init(self, *args, **kw)
        self.block_on_device = block_on_device

    monkeypatch.setattr(lik.GridLikelihoodEngine, "__init__", engine_init)
    monkeypatch.setattr(tmod, "IterativeSchurSolver", _TorchFactorOnCpu)
    monkeypatch.setattr(_TorchFactorOnCpu, "blocks_seen", [])
    dev = fit(df, solver="iterative", se_facets="model,question")
    kinds = set(_TorchFactorOnCpu.blocks_seen)
    assert kinds == {torch.Tensor if block_on_device else np.ndarray}
    assert dev.convergence["se_method"].iloc[0].startswith("exact (Schur complement")
    np.testing.assert_allclose(dev.measures["measure"], host.measures["measure"], rtol=0,
                               atol=1e-12)
    np.testing.assert_allclose(dev.measures["se"], host.measures["se"], rtol=1e-10)
    for dim in host.cov:
        np.testing.assert_allclose(dev.cov[dim].to_numpy(), host.cov[dim].to_numpy(),
                                   rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("device", FACTOR_DEVICES)
def test_singular_schur_complement_is_refused_on_either_factor(device):
    import scipy.sparse as sp

    _, dense, _ = _leaderboard_hessian(5, 12)
    B = dense[0][2]  # every item kept: theta and b shifted together leave the likelihood as is
    Hs = sp.diags(np.r_[-B.sum(1), -B.sum(0)]).tocsr()
    full = [(np.arange(5), np.arange(5, 17), B)]
    with pytest.raises(NotPositiveDefinite, match="singular"):
        cg.IterativeSchurSolver(Hs, full, [np.arange(5), np.arange(5, 17)],
                                device=device).factorise_dense()


def test_forced_se_routes_give_the_same_fit(monkeypatch):
    df, _, _ = leaderboard(40, 150, 0.3, seed=7)
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)  # the model x question block dense
    monkeypatch.setattr(cg, "_CHUNK_CELLS", 40 * 11)
    monkeypatch.setattr(cg, "_BLOCK_CELLS", 40 * 3)
    fits = {}
    for route in ("dense", "iterative"):
        monkeypatch.setattr(cg, "se_route", lambda *a, route=route: route)
        fits[route] = fit(df, solver="iterative", se_facets="model,question")
    a, b = fits["dense"], fits["iterative"]
    assert a.convergence["se_method"].iloc[0].startswith("exact (Schur complement")
    assert b.convergence["se_method"].iloc[0].startswith("exact (iterative solves")
    np.testing.assert_array_equal(a.measures["measure"], b.measures["measure"])
    assert a.measures["se"].notna().all()
    np.testing.assert_allclose(b.measures["se"], a.measures["se"], rtol=1e-8)
    for dim in a.cov:
        np.testing.assert_allclose(b.cov[dim].to_numpy(), a.cov[dim].to_numpy(), rtol=1e-8,
                                   atol=1e-14)
    assert_same_fit(fit(df, solver="direct"), a)


def test_block_helpers_mirror_and_symmetrize_in_place():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(23, 23))
    for tile in (5, 23, 256):  # ragged tiles, one tile, a tile larger than A
        L = A.copy()
        cg._mirror_lower(L, tile=tile)
        np.testing.assert_array_equal(L, np.tril(A) + np.tril(A, -1).T)
    ref = 0.5 * (A + A.T)
    out = tmod._symmetrize(A, cells=25)  # 5 x 5 blocks, the last ones ragged
    assert out is A
    np.testing.assert_allclose(A, ref, rtol=0, atol=1e-15)
    assert (A == A.T).all()


def test_se_stage_memory_is_s_plus_bounded_blocks():
    # 2,000 models x 3,000 items: S is 32 MB. Forming it in place, factorising and inverting it
    # in place, and the model block of the inverse must cost ~S plus the chunks (2 MB each here),
    # not several S-sized temporaries (before: ~5.6 S). Peak resident memory in a fresh process.
    code = (
        "import resource, numpy as np\n"
        "import irtpeer.estimators._cg as cg\n"
        "import tests.test_scale as ts\n"
        "cg._CHUNK_CELLS = cg._BLOCK_CELLS = 1 << 18\n"
        "Hs, dense, blocks = ts._leaderboard_hessian(2000, 3000)\n"
        "S = cg.IterativeSchurSolver(Hs, dense, blocks)\n"
        "want = np.zeros(S.n, bool); want[:2000] = True\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "d = S.diag_inv(want, route='dense'); blk = S.inverse_block(np.arange(2000), None)\n"
        "r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "assert np.all(d[:2000] > 0) and blk.shape == (2000, 2000)\n"
        "print((r1 - r0) * 1024 / (2000 * 2000 * 8))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False, timeout=120, cwd=str(Path(__file__).resolve().parents[1]),
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert float(res.stdout.split()[-1]) < 1.4  # extra peak, in units of S (measured 1.15)


@pytest.mark.parametrize("device", FACTOR_DEVICES)
def test_eliminated_ses_from_the_factor_equal_those_from_s_inverse(device):
    """Item SEs come from the Cholesky factor (a triangular solve) when S^-1 is not formed yet,
    and from S^-1 (GEMM) when it is: both equal the exact inverse's diagonal."""
    Hs, dense, blocks = _leaderboard_hessian(37, 90)
    H = Hs.toarray()
    H[:37, 37:] += dense[0][2][:, :-1]
    H[37:, :37] += dense[0][2][:, :-1].T
    exact = np.diag(np.linalg.inv(H))
    first = cg.IterativeSchurSolver(Hs, dense, blocks, device=device).diag_inv(route="dense")
    later = cg.IterativeSchurSolver(Hs, dense, blocks, device=device)
    later._S_inverse()  # S^-1 formed before the diagonal is asked for: the GEMM route
    np.testing.assert_allclose(first, exact, rtol=1e-10)
    np.testing.assert_allclose(later.diag_inv(route="dense"), exact, rtol=1e-10)


def test_no_two_hessian_blocks_are_alive_at_once(monkeypatch):
    """A leaderboard's dense Hessian block is GBs (1.4 GB at 6,000 x 30,000): each new one,
    the final one for the standard errors included, is built only after the last is freed (the
    final one was built beside the last, +8 bytes per cell at the peak, after a refactor)."""
    import gc
    import weakref

    df, _, _ = leaderboard(40, 150, 0.3, seed=7)
    monkeypatch.setattr(lik, "BLOCK_MIN_CELLS", 1)  # the model x question block dense
    monkeypatch.setattr(tmod, "FINAL_HESSIAN_STEP", -1.0)  # always a fresh final Hessian
    blocks, alive_before = [], []
    evaluate = lik.GridLikelihoodEngine.evaluate

    def spy(self, params, need_hessian=True):
        if need_hessian:
            gc.collect()
            alive_before.append(sum(r() is not None for r in blocks))
        ev = evaluate(self, params, need_hessian)
        blocks.extend(weakref.ref(B) for _, _, B in ev.dense or [])
        return ev

    monkeypatch.setattr(lik.GridLikelihoodEngine, "evaluate", spy)
    fit(df, solver="iterative")
    assert len(alive_before) >= 3 and len(blocks) >= 3  # start, iterations, the final one
    assert alive_before == [0] * len(alive_before)
