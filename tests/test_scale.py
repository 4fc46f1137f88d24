"""The large-design path of the torch estimator, forced on small designs where the direct path
(nested Schur complements, factorised densely) is the reference: the iterative solver (CG on the
Schur complement), dense facet-pair blocks, standard errors by iterative solves, --se-facets."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import irtpeer
import irtpeer.estimators._cg as cg
import irtpeer.estimators._likelihood as lik
import irtpeer.estimators._torch as tmod
from irtpeer import IrtpeerError, ModelSpec, TorchMFRM


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
