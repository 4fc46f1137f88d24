"""Question-clustered SEs: the sandwich against statsmodels' cluster-robust GLM (contrasts) and
the bootstrap, and a small coverage simulation (the full-size one is
benchmarks/bench_clustered_coverage.py)."""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from analyses_sim import crossed, fit

import irtpeer
from irtpeer.analyses import clustered_se, question_uncertainty

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


def _interacting(K=1):
    rng = np.random.default_rng(8)
    theta = np.linspace(-1, 1, 4)
    u = rng.normal(0, 0.5, (4, 30))
    return fit(crossed(theta, rng.normal(0, 0.8, 30), np.array([-0.4, 0.1, 0.3]),
                       np.array([-0.3, 0.3]), u=u, K=K, seed=9))


@pytest.fixture(scope="module")
def interacting():
    return _interacting()


def test_sandwich_contrasts_match_statsmodels_cluster_robust_glm(interacting):
    """For differences between models the profiled sandwich equals the cluster-robust covariance
    of a dummy-coded logistic GLM with question fixed effects (statsmodels 0.15, cov_type
    'cluster' without its small-sample factor, times our G/(G-1))."""
    cal, ratings = interacting
    df = ratings.data
    X = pd.get_dummies(df[["model", "question", "judge", "item"]], drop_first=False, dtype=float)
    X = X.drop(columns=["question_q000", "judge_j0", "item_A0"])  # models keep all four
    groups = pd.factorize(df["question"])[0]
    res = sm.GLM(df["_score"].to_numpy(), X, family=sm.families.Binomial()).fit(
        cov_type="cluster", cov_kwds={"groups": groups, "use_correction": False}, tol=1e-12)
    G = len(np.unique(groups))
    V_ref = res.cov_params().loc[[f"model_m{i}" for i in range(4)],
                                 [f"model_m{i}" for i in range(4)]].to_numpy() * G / (G - 1)
    V = question_uncertainty(cal, ratings).cov["A"].to_numpy()
    C = np.array([[1, -1, 0, 0], [0, 1, -1, 0], [0, 0, 1, -1], [1, 0, 0, -1]], dtype=float)
    np.testing.assert_allclose(C @ V @ C.T, C @ V_ref @ C.T, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("K", [1, 3])
def test_sandwich_agrees_with_bootstrap_over_questions(K):
    cal, ratings = _interacting(K)
    sand = clustered_se(cal, ratings)
    boot = clustered_se(cal, ratings, method="bootstrap", estimator=irtpeer.TorchMFRM(device="cpu"),
                        n_boot=60, seed=1)
    assert list(sand.columns) == ["model", "A_se_q"] and list(boot.columns) == ["model", "A_se_q"]
    # 60 replicates: the SD of a bootstrap SE is about SE / sqrt(2 * 59) = 9%; allow 30%
    np.testing.assert_allclose(sand["A_se_q"], boot["A_se_q"], rtol=0.3)
    # with u_mq and questions as a sample the clustered SEs exceed the conditional ones
    assert (sand["A_se_q"].to_numpy() > cal.scores["A_se"].to_numpy()).all()


def test_composites_get_clustered_se_from_shared_questions():
    sim = irtpeer.simulate(models=4, questions=40, judges=2, dimensions="A,T,E,C",
                           items_per_dimension=2, categories=3, seed=5)
    ratings = irtpeer.load_ratings(sim.ratings)
    cal = irtpeer.TorchMFRM(device="cpu").fit(ratings).calibration_
    res = question_uncertainty(cal, ratings)
    cols = {"model", "A_se_q", "T_se_q", "E_se_q", "C_se_q", "peer_se_q", "dignity_se_q"}
    assert set(res.se.columns) == cols
    V = res.cov
    # the covariance of a mean is the mean of the covariances, cross terms from shared questions
    assert np.all(np.diag(V["peer"]) > 0)
    assert np.all(np.diag(V["peer"]) <= (np.diag(V["E"]) + np.diag(V["C"])) / 2 + 1e-12)


def test_coverage_small_simulation():
    """40 replicates x 4 models: the sandwich covers about 95%, the conditional SE less.

    Binomial error of a 95% coverage over 160 intervals is 1.7%, but intervals of one replicate
    share its questions, so the bounds are wide (0.88-0.995); the benchmark runs 1000 replicates.
    """
    from bench_clustered_coverage import replicate

    rng = np.random.default_rng(11)
    theta = np.linspace(-1, 1, 4)
    alpha, delta = np.array([-0.3, 0.0, 0.3]), np.array([-0.5, 0.5])
    hits = {"conditional": [[], []], "sandwich": [[], []]}
    for _ in range(40):
        for k, (cm, cd) in replicate(rng, theta, alpha, delta, 40, 0.8, 0.5).items():
            hits[k][0].append(cm)
            hits[k][1].append(cd)
    cover = {k: [np.concatenate(v[0]).mean(), np.concatenate(v[1]).mean()] for k, v in hits.items()}
    assert 0.88 <= cover["sandwich"][0] <= 0.995
    assert 0.88 <= cover["sandwich"][1] <= 0.995
    assert cover["conditional"][0] < cover["sandwich"][0] - 0.05


def test_clustered_errors_are_one_line(interacting):
    cal, ratings = interacting
    with pytest.raises(irtpeer.IrtpeerError, match="'rater' is not a facet"):
        clustered_se(cal, ratings, cluster="rater")
    with pytest.raises(irtpeer.IrtpeerError, match="pass the estimator"):
        clustered_se(cal, ratings, method="bootstrap")
    with pytest.raises(irtpeer.IrtpeerError, match="not one of sandwich, bootstrap"):
        clustered_se(cal, ratings, method="jackknife")
