"""The Bayesian estimator (random-person Rasch model) on real data with published analyses.

* VerbAgg (De Boeck & Wilson 2004; lme4), binary, 316 persons x 24 items:
  ``glmer(r2 ~ -1 + item + (1|id), binomial)``.
* Style ratings (Wind & Hua, CRC Rasch book ch. 6), 372 students x 21 raters, ratings 0..3:
  TAM's marginal-ML many-facet rating scale model.

The person SD of the VerbAgg model and the rater severities of the style data are not printed in
the sources at hand, so both are computed here by exact marginal ML (tests/bayes_mml.py, Gauss-
Hermite quadrature: the estimator of glmer and TAM), which first has to reproduce the published
glmer item values.
"""

import numpy as np
import pandas as pd
import pytest
from bayes_mml import mml_rasch
from irtpeer_paths import SHARED_DATA

import irtpeer

pytest.importorskip("pymc", reason="the 'bayes' extra (pymc, nutpie, arviz) is not installed")

VERBAGG = SHARED_DATA / "verbagg_long.csv"
STYLE = SHARED_DATA / "style_ratings.csv"

# glmer(r2 ~ -1 + item + (1|id), family = binomial) on lme4's VerbAgg: item "easiness"
# estimates as printed by eirm (a wrapper of glmer), README of github.com/okanbulut/eirm
# (devel version 0.6), section "Examples", print(mod1). Difficulty = -easiness.
GLMER_EASINESS = {
    "S1WantCurse": 1.22107, "S1WantScold": 0.56477, "S1WantShout": 0.08009,
    "S2WantCurse": 1.74879, "S2WantScold": 0.70772, "S2WantShout": 0.01172,
    "S3WantCurse": 0.52947, "S3WantScold": -0.68637, "S3WantShout": -1.52694,
    "S4wantCurse": 1.08204, "S4WantScold": -0.34938, "S4WantShout": -1.04402,
    "S1DoCurse": 1.22107, "S1DoScold": 0.38962, "S1DoShout": -0.87122,
    "S2DoCurse": 0.87264, "S2DoScold": -0.05668, "S2DoShout": -1.48186,
    "S3DoCurse": -0.21104, "S3DoScold": -1.50431, "S3DoShout": -2.97500,
    "S4DoCurse": 0.70772, "S4DoScold": -0.38422, "S4DoShout": -1.99947,
}


def _need(path):
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (../shared/data)")


def _bayes(ratings, **kw):
    from irtpeer.estimators import get_estimator

    return get_estimator("bayes")(draws=400, tune=400, chains=2, seed=1, **kw).fit(ratings)


def test_verbagg_items_and_person_sd_match_glmer(tmp_path):
    _need(VERBAGG)
    raw = pd.read_csv(VERBAGG)
    long = pd.DataFrame({"id": raw["id"].astype(str), "item": raw["item"],
                         "score": (raw["r2"] == "Y").astype(int)})
    path = tmp_path / "v.parquet"
    long.to_parquet(path)
    ratings = irtpeer.load_ratings(path, person="id", facets="item")
    cal = _bayes(ratings).calibration_
    items = cal.facet("item").set_index("element")["measure"]
    pub = -pd.Series(GLMER_EASINESS)
    pub = pub - pub.mean()
    np.testing.assert_allclose(items.loc[pub.index] - items.mean(), pub, atol=0.05)
    # the person SD: exact MML (quadrature), which reproduces the published items to 0.005
    person = pd.Categorical(long["id"]).codes
    item = pd.Categorical(long["item"], categories=list(GLMER_EASINESS)).codes
    b, _, sigma = mml_rasch(person, item, long["score"].to_numpy(), 1)
    np.testing.assert_allclose(b - b.mean(), pub.to_numpy(), atol=0.005)
    row = cal.convergence.iloc[0]
    assert abs(row["sigma_theta"] - sigma) < 0.05, (row["sigma_theta"], sigma)
    # short chains keep the test quick: R-hat is checked loosely here (the benchmark holds 1.01)
    assert row["r_hat_max"] < 1.05 and row["divergences"] == 0


def test_style_rater_severities_match_marginal_ml():
    _need(STYLE)
    wide = pd.read_csv(STYLE)
    long = wide.melt(id_vars=["student", "language"], var_name="rater", value_name="score")
    long = long.dropna(subset=["score"])
    long["student"] = long["student"].astype(str)
    ratings = irtpeer.load_ratings(long[["student", "rater", "score"]], person="student",
                                   facets="rater")
    cal = _bayes(ratings).calibration_
    raters = cal.facet("rater").set_index("element")["measure"]
    names = [f"rater_{i}" for i in range(1, 22)]
    person = pd.Categorical(long["student"]).codes
    rater = pd.Categorical(long["rater"], categories=names).codes
    # 21 ratings per student make each likelihood narrow next to sigma ~ 3.3: integrate on a fine
    # grid (a 41-node Gauss-Hermite rule gives sigma 2.99; 201 grid points and 401 agree: 3.311)
    b, tau, sigma = mml_rasch(person, rater, long["score"].astype(int).to_numpy(), 3, nodes=201,
                              grid=True)
    np.testing.assert_allclose(raters.loc[names], b - b.mean(), atol=0.05)
    thr = cal.facet("threshold")["measure"].to_numpy()
    np.testing.assert_allclose(thr, tau, atol=0.05)
    assert abs(cal.convergence.iloc[0]["sigma_theta"] - sigma) < 0.1
