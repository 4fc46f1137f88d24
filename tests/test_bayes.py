"""The Bayesian estimator against the exact torch MLE, its outputs, and reproducibility.

One compiled model serves the module (nutpie compiles once per distinct data set in a process);
chains are short where the check allows.
"""

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer import ModelSpec, TorchMFRM

pytest.importorskip("pymc", reason="the 'bayes' extra (pymc, nutpie, arviz) is not installed")

from irtpeer.estimators import get_estimator
from irtpeer.estimators._bayes_diagnostics import (
    posterior_predictive_table,
    rank_probabilities,
    warnings,
    write_bayes_outputs,
)

FLAT = {"facet_sigma": 20.0, "threshold_sigma": 20.0, "flat_sigma": 20.0}


@pytest.fixture(scope="module")
def ample():
    # 5 models x 3 judges x 2 items, 150 replicated questions each: every element has >= 1,400
    # ratings (a rating scale 0..2); identical cells merge into 30 cells with category counts.
    sim = irtpeer.simulate(models=5, questions=150, judges=3, dimensions="A", items_per_dimension=2,
                           categories=3, missing=0.0, seed=4)
    ratings = irtpeer.load_ratings(sim.ratings, facets="judge,item", duplicates="keep")
    return ratings


@pytest.fixture(scope="module")
def bayes_cal(ample):
    est = get_estimator("bayes")(person_prior="flat", priors=FLAT, draws=500, tune=500, chains=2,
                                 seed=11)
    return est.fit(ample).calibration_


def test_posterior_means_and_sds_match_the_exact_mle(ample, bayes_cal):
    torch_cal = TorchMFRM(device="cpu").fit(ample).calibration_
    m = bayes_cal.measures.merge(torch_cal.measures, on=["dimension", "facet", "element"],
                                 suffixes=("_b", "_t"))
    assert len(m) == len(torch_cal.measures) == 5 + 3 + 2 + 2
    np.testing.assert_allclose(m["measure_b"], m["measure_t"], atol=0.05)
    np.testing.assert_allclose(m["se_b"], m["se_t"], rtol=0.10)
    # FACETS' model SE at the posterior means is the torch estimator's se_model
    np.testing.assert_allclose(m["se_model_b"], m["se_model_t"], rtol=0.05)
    # the model-level scores and their covariance agree too
    s = bayes_cal.scores.set_index("model")
    t = torch_cal.scores.set_index("model")
    np.testing.assert_allclose(s["A"], t["A"], atol=0.05)
    np.testing.assert_allclose(s["A_se"], t["A_se"], rtol=0.10)


def test_identification_and_intervals(bayes_cal):
    ms = bayes_cal.measures
    for facet in ("judge", "item", "threshold"):
        assert abs(ms.loc[ms.facet == facet, "measure"].sum()) < 1e-8
    assert (ms["hdi_low"] < ms["measure"]).all() and (ms["measure"] < ms["hdi_high"]).all()
    # a 95% HDI of a near-normal posterior is about +-1.96 SD
    width = (ms["hdi_high"] - ms["hdi_low"]) / (2 * 1.96 * ms["se"])
    assert width.between(0.85, 1.15).all(), width
    assert list(ms.columns[:10]) == ["dimension", "facet", "element", "measure", "se", "se_model",
                                     "count", "total", "observed_average", "status"]


def test_diagnostics_row_and_warnings(bayes_cal):
    row = bayes_cal.convergence.iloc[0]
    assert row["sampler"] == "nutpie" and not row["approximate"]
    assert row["r_hat_max"] < 1.01 and row["ess_bulk_min"] > 200 and row["divergences"] == 0
    assert row["n_cells"] == 30 and row["n_obs"] == 5 * 150 * 3 * 2
    assert bool(row["converged"]) and warnings(bayes_cal) == []
    bad = bayes_cal.convergence.copy()
    bad.loc[0, ["r_hat_max", "ess_tail_min", "divergences"]] = [1.05, 50.0, 3]
    fake = type("C", (), {"convergence": bad})()
    msgs = warnings(fake)
    assert any("R-hat 1.050" in w for w in msgs)
    assert any("tail ESS 50 < 100 per chain" in w for w in msgs)
    assert any("3 divergent" in w for w in msgs)


def test_rank_probabilities_are_a_distribution(bayes_cal):
    rp = rank_probabilities(bayes_cal)
    p = rp[[f"rank_{r}" for r in range(1, 6)]].to_numpy()
    np.testing.assert_allclose(p.sum(1), 1.0)
    np.testing.assert_allclose(p.sum(0), 1.0)
    # the expected rank orders the models like their posterior means
    means = bayes_cal.scores.set_index("model")["A"]
    assert list(rp["model"]) == list(means.sort_values(ascending=False).index)


def test_posterior_predictive_table_covers_the_observed_counts(bayes_cal):
    ppc = posterior_predictive_table(bayes_cal)
    assert set(ppc["facet"]) == {"model", "judge", "item"}
    assert len(ppc) == (5 + 3 + 2) * 3
    # the model fits its own simulation: observed counts fall in the 90% predictive intervals
    assert ppc["outside"].mean() <= 0.2
    per = ppc.groupby(["facet", "element"])["observed"].sum()
    assert (per[per.index.get_level_values(0) == "judge"] == 5 * 150 * 2).all()


def test_outputs_are_written_and_read_back(bayes_cal, tmp_path):
    import arviz as az

    paths = write_bayes_outputs(bayes_cal, tmp_path / "out")
    assert {p.name for p in paths.values()} == {"diagnostics.csv", "rank_probabilities.csv",
                                                 "posterior_predictive.csv", "idata.nc"}
    idata = az.from_netcdf(paths["idata"])
    theta = idata.posterior["A__model"]
    assert theta.shape == (2, 500, 5)
    np.testing.assert_allclose(theta.mean(("chain", "draw")).values,
                               bayes_cal.facet("model")["measure"].to_numpy())
    assert "A__diverging" in idata.sample_stats
    diag = pd.read_csv(paths["diagnostics"])
    assert diag.loc[0, "dimension"] == "A" and "r_hat_max" in diag
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_same_seed_same_measures_other_seed_differs(ample, bayes_cal):
    cls = get_estimator("bayes")
    again = cls(person_prior="flat", priors=FLAT, draws=500, tune=500, chains=2, seed=11)
    pd.testing.assert_frame_equal(again.fit(ample).calibration_.measures, bayes_cal.measures)
    other = cls(person_prior="flat", priors=FLAT, draws=500, tune=500, chains=2, seed=12)
    diff = other.fit(ample).calibration_.measures["measure"] - bayes_cal.measures["measure"]
    assert 0 < diff.abs().max() < 0.05


def test_bad_options_are_one_line_errors(ample):
    cls = get_estimator("bayes")
    cases = [({"person_prior": "wide"}, "person_prior 'wide' is not one of normal, flat"),
             ({"draws": 0}, "draws must be an integer >= 1"),
             ({"method": "mcmc"}, "method 'mcmc' is not one of nuts, advi, pathfinder"),
             ({"priors": {"facet_sd": 1}}, "unknown prior 'facet_sd'"),
             ({"priors": {"facet_sigma": -1}}, "prior facet_sigma must be a number > 0")]
    for kw, msg in cases:
        with pytest.raises(irtpeer.IrtpeerError, match=msg) as exc:
            cls(**kw).fit(ample)
        assert "\n" not in str(exc.value)
    with pytest.raises(irtpeer.DesignError, match="not identified"):
        cls(ModelSpec(person_mode="response"), person_prior="flat").fit(ample)
    with pytest.raises(irtpeer.DesignError, match="needs the facet 'question'"):
        cls(ModelSpec(person_mode="hierarchical")).fit(ample)


def test_vectorised_convergence_diagnostics_equal_arviz():
    import arviz as az

    from irtpeer.estimators._bayes_convergence import convergence, ess_bulk, ess_tail, rhat_rank

    rng = np.random.default_rng(0)
    C, D, P = 4, 300, 12
    x = np.zeros((C, D, P))
    phi = np.linspace(0.0, 0.95, P)
    e = rng.normal(size=(C, D, P))
    for t in range(1, D):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    x[0] += 0.3  # one chain off: R-hat must see it
    x[:, :, 0] = np.round(x[:, :, 0])  # ties: average ranks
    ds = az.convert_to_dataset({"x": x})
    np.testing.assert_allclose(rhat_rank(x), az.rhat(ds)["x"].values, rtol=1e-12)
    np.testing.assert_allclose(ess_bulk(x), az.ess(ds, method="bulk")["x"].values, rtol=0.005)
    np.testing.assert_allclose(ess_tail(x), az.ess(ds, method="tail")["x"].values, rtol=0.005)
    # the one-pass version the estimator uses: the same numbers exactly
    for one, alone in zip(convergence(x), (rhat_rank(x), ess_bulk(x), ess_tail(x))):
        np.testing.assert_array_equal(one, alone)


def test_advi_is_close_and_labelled_approximate(ample, bayes_cal):
    cal = get_estimator("bayes")(method="advi", person_prior="flat", priors=FLAT, draws=500,
                                 chains=2, seed=1, advi_iterations=20000).fit(ample).calibration_
    row = cal.convergence.iloc[0]
    assert row["approximate"] and row["method"] == "advi" and np.isnan(row["r_hat_max"])
    assert any("APPROXIMATE" in n for n in cal.notes) and "APPROXIMATE" in cal.identification["A"]
    expected = ("[A] method 'advi' gives an APPROXIMATE posterior; SDs and intervals are often "
                "too narrow")
    assert warnings(cal) == [expected]
    np.testing.assert_allclose(cal.measures["measure"], bayes_cal.measures["measure"], atol=0.1)


def test_without_the_bayes_extra_one_line_says_how_to_install(ample, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pymc", None)  # import pymc now raises ImportError
    with pytest.raises(irtpeer.IrtpeerError, match=r"pip install 'irtpeer\[bayes\]'") as exc:
        get_estimator("bayes")().fit(ample)
    assert "\n" not in str(exc.value)


def test_pointwise_log_likelihood_for_loo(ample):
    import arviz as az
    from scipy.stats import multinomial

    cal = get_estimator("bayes")(person_prior="flat", priors=FLAT, draws=200, tune=300, chains=2,
                                 seed=2, log_likelihood=True).fit(ample).calibration_
    ll = cal.idata.log_likelihood["A__cells"]
    assert ll.shape == (2, 200, 30)
    # one cell by hand at one draw: its counts' log-probability without the multinomial coefficient
    post = cal.idata.posterior
    th, j, it = (post[f"A__{f}"].values[0, 0] for f in ("model", "judge", "item"))
    cum = np.concatenate([[0.0], np.cumsum(post["A__threshold"].values[0, 0])])
    eta = th[0] - j[0] - it[0]  # model-1, judge-1, A1: the first cell
    psi = eta * np.arange(3) - cum
    logp = psi - np.log(np.exp(psi).sum())
    counts = ample.data.query("model == 'model-1' and judge == 'judge-1' and item == 'A1'")
    n = np.bincount(counts["_score"].astype(int), minlength=3)
    expected = multinomial.logpmf(n, n.sum(), np.exp(logp)) - multinomial.logpmf(
        n, n.sum(), np.ones(3) / 3) + n.sum() * np.log(1 / 3)
    assert abs(float(ll.values[0, 0, 0]) - expected) < 1e-8
    assert np.isfinite(az.loo(cal.idata, var_name="A__cells").elpd_loo)


def test_fused_softplus_op_value_and_gradient():
    # the binary likelihood's sum(total * softplus(eta)) with its fused gradient, in the NumPy
    # perform (PyMC's backends) and the numba kernel (nutpie), against SciPy
    import pytensor
    import pytensor.tensor as pt
    from scipy.special import expit, log1p

    from irtpeer.estimators._bayes_ops import softplus_dot

    rng = np.random.default_rng(0)
    eta0 = rng.normal(0, 8, size=(40, 3))  # large |eta| too: no overflow
    total = rng.integers(0, 4, size=(40, 3)).astype(float)
    x = pt.dmatrix("x")
    value = softplus_dot(x, total)
    expected = np.sum(total * (np.maximum(eta0, 0) + log1p(np.exp(-np.abs(eta0)))))
    for mode in ("FAST_COMPILE", "NUMBA"):
        f = pytensor.function([x], [value, pytensor.grad(value, x)], mode=mode)
        v, g = f(eta0)
        assert abs(v - expected) < 1e-9 * abs(expected), mode
        np.testing.assert_allclose(g, total * expit(eta0), rtol=1e-12, atol=1e-300)
