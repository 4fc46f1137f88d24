"""Judge count on simulated data with 5 judges: the ranking agreement rises to 1 with k, and
leaving a judge out moves the measures by the re-centring the bound predicts."""

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer.analyses import d_study, judge_count


@pytest.fixture(scope="module")
def result():
    sim = irtpeer.simulate(models=6, questions=30, judges=5, dimensions="A", items_per_dimension=3,
                           model_sd=0.3, judge_sd=1.0, missing=0.0, seed=4)
    ratings = irtpeer.load_ratings(sim.ratings)
    est = irtpeer.TorchMFRM(device="cpu")
    cal = est.fit(ratings).calibration_
    return cal, ratings, judge_count(cal, ratings, est, max_subsets=20, seed=0)


def test_tau_rises_with_k_to_one(result):
    _, _, res = result
    curve = res.curve[res.curve["target"] == "A"].set_index("k")
    assert curve.index.tolist() == [1, 2, 3, 4, 5]
    assert curve["subsets"].tolist() == [5, 10, 10, 5, 1]  # every subset: C(5, k) <= 20
    tau = curve["tau_models_mean"].to_numpy()
    assert tau[0] < 0.9 and tau[-1] == pytest.approx(1.0)
    assert np.all(np.diff(tau) >= -0.02)  # non-decreasing up to sampling noise
    assert curve["mean_se"].is_monotonic_decreasing
    assert curve.loc[5, "max_shift"] == 0.0 and curve.loc[1, "max_shift"] > curve.loc[4, "max_shift"]


def test_leave_one_out_moves_measures_by_the_bound(result):
    cal, _, res = result
    loo = res.leave_one_out
    assert len(loo) == 5
    sev = cal.facet("judge", "A").set_index("element")["measure"]
    np.testing.assert_allclose(loo["predicted_shift"], sev.reindex(loo["judge"]).to_numpy() / 4)
    # the common shift is the re-centring alpha_j / (N - 1); what is left is small
    np.testing.assert_allclose(loo["mean_shift"], loo["predicted_shift"], atol=0.03)
    assert (loo["mean_shift"].abs() <= loo["bound"] + 0.03).all()
    assert (loo["max_centred_shift"] < 0.25).all()


def test_d_study_against_anova_by_hand():
    rng = np.random.default_rng(1)
    n_p, n_j = 30, 4
    X = rng.normal(0, 1, (n_p, 1)) + rng.normal(0, 0.5, (1, n_j)) + rng.normal(0, 0.7, (n_p, n_j))
    X = np.round(X * 2).astype(int)
    frame = pd.DataFrame([(f"m{p % 3}", f"q{p}", f"j{j}", X[p, j]) for p in range(n_p)
                          for j in range(n_j)], columns=["model", "question", "judge", "score"])
    ds = d_study(irtpeer.load_ratings(frame)).set_index("n_judges")
    # two-way ANOVA without replication, mean squares by hand
    g = X.mean()
    ms_p = n_j * ((X.mean(1) - g) ** 2).sum() / (n_p - 1)
    ms_e = ((X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + g) ** 2).sum() / (
        (n_p - 1) * (n_j - 1))
    s_p = (ms_p - ms_e) / n_j
    assert ds.loc[4, "e_rho2"] == pytest.approx((ms_p - ms_e) / ms_p)  # = Cronbach's alpha
    assert ds.loc[1, "e_rho2"] == pytest.approx(s_p / (s_p + ms_e))
    assert ds["e_rho2"].is_monotonic_increasing and (ds["phi"] <= ds["e_rho2"]).all()
