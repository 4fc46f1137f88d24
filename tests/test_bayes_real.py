"""The Bayesian estimator (random-person Rasch model) on real data with published analyses.

* VerbAgg (De Boeck & Wilson 2004; lme4), binary, 316 persons x 24 items:
  ``glmer(r2 ~ -1 + item + (1|id), binomial)``.
* Style ratings (Wind & Hua, "Rasch Measurement Theory Analysis in R", CRC 2022, the many-facet
  chapter), 372 students x 21 raters, ratings 0..3: TAM's marginal-ML many-facet rating scale model.

The person SD of the VerbAgg model is not printed in the sources at hand, so it is computed here by
exact marginal ML (tests/bayes_mml.py, Gauss-Hermite quadrature: the estimator of glmer and TAM),
which first has to reproduce the published glmer item values. The style raters come from TAM itself
(see TAM_STYLE_RATERS below for how and why).
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


# TAM's rater severities on the style ratings. The book's printed output was not found (its code
# is public: "Chapter 6 Code" of the book's companion scripts, which reads style_ratings.csv and
# fits ``tam.mml.mfr(resp = ratings, facets = style[, "language", drop = FALSE],
# formulaA = ~ item + language + step, pid = students, constraint = "items")``), so TAM was run
# here: R 4.2.2, TAM 4.4-2 and CDM 8.4-2 built from github.com/alexanderrobitzsch/TAM @ 8fc1c216
# and alexanderrobitzsch/CDM @ 7b747abb, control conv = convD = 1e-6, maxiter = 2000; the script:
#
#   style <- read.csv("style_ratings.csv"); ratings <- subset(style, select = -c(student, language))
#   book <- tam.mml.mfr(resp = ratings, facets = style[, "language", drop = FALSE],
#                       formulaA = ~ item + language + step, pid = style$student,
#                       constraint = "items", control = ctl)           # the book's model
#   fine <- tam.mml.mfr(resp = ratings, formulaA = ~ item + step, pid = style$student,
#                       constraint = "items",
#                       control = c(ctl, list(nodes = seq(-16, 16, length.out = 241))))
#   book$xsi.facets; fine$xsi.facets; book$variance; fine$variance
#
# Conventions: TAM's "item" parameters here are the raters, xsi = severity (higher = lower ratings,
# irtpeer's sign), and constraint = "items" makes them sum to zero (irtpeer centres the facet the
# same way); the steps sum to zero as irtpeer's thresholds do.
# * "book": the book's model with TAM's default quadrature (21 nodes on [-6, 6]). The person SD is
#   about 3.3, so those nodes cut the person distribution off at +-1.8 SD: variance 9.53 instead of
#   10.96 and every rater severity shrunk by 4.5% (rater_9 1.117 vs 1.170). The language facet moves
#   no rater by more than 0.0008 (the same model without it: rater_9 1.117132).
# * "fine": the model irtpeer fits (raters only, no language facet) with 241 nodes on [-16, 16]:
#   the exact marginal-ML values (tests/bayes_mml.py on a 201-point grid agrees to 0.0002).
TAM_STYLE_RATERS = {
    "book": {
        "rater_1": -0.280177, "rater_2": -0.313856, "rater_3": 0.168237, "rater_4": 0.033731,
        "rater_5": -0.776638, "rater_6": -0.336317, "rater_7": -0.224075, "rater_8": 0.269192,
        "rater_9": 1.117323, "rater_10": -0.867775, "rater_11": -0.212858, "rater_12": -0.280177,
        "rater_13": -0.336317, "rater_14": 0.257970, "rater_15": -0.822161, "rater_16": 0.437697,
        "rater_17": 0.448945, "rater_18": 0.112183, "rater_19": 0.663069, "rater_20": 0.437697,
        "rater_21": 0.504303,
    },
    "fine": {
        "rater_1": -0.293126, "rater_2": -0.328325, "rater_3": 0.175623, "rater_4": 0.034986,
        "rater_5": -0.811973, "rater_6": -0.351800, "rater_7": -0.234544, "rater_8": 0.281264,
        "rater_9": 1.170479, "rater_10": -0.907240, "rater_11": -0.222820, "rater_12": -0.293126,
        "rater_13": -0.351800, "rater_14": 0.269519, "rater_15": -0.859557, "rater_16": 0.457680,
        "rater_17": 0.469460, "rater_18": 0.117041, "rater_19": 0.693827, "rater_20": 0.457680,
        "rater_21": 0.526754,
    },
}
TAM_STYLE_STEPS = {"book": [-4.008777, 0.235349, 3.773428], "fine": [-4.198272, 0.261012, 3.937260]}
TAM_STYLE_VARIANCE = {"book": 9.530082, "fine": 10.960283}


def test_style_rater_severities_match_tam():
    _need(STYLE)
    wide = pd.read_csv(STYLE)
    long = wide.melt(id_vars=["student", "language"], var_name="rater", value_name="score")
    long = long.dropna(subset=["score"])
    long["student"] = long["student"].astype(str)
    ratings = irtpeer.load_ratings(long[["student", "rater", "score"]], person="student",
                                   facets="rater")
    cal = _bayes(ratings).calibration_
    raters = cal.facet("rater").set_index("element")["measure"]
    fine = pd.Series(TAM_STYLE_RATERS["fine"])
    np.testing.assert_allclose(raters.loc[fine.index], fine, atol=0.05)
    thr = cal.facet("threshold")["measure"].to_numpy()
    np.testing.assert_allclose(thr, TAM_STYLE_STEPS["fine"], atol=0.05)
    sigma = cal.convergence.iloc[0]["sigma_theta"]
    assert abs(sigma - np.sqrt(TAM_STYLE_VARIANCE["fine"])) < 0.1
    # the book's own settings: the same raters up to TAM's 4.5% shrinkage by its coarse default
    # quadrature (see above); without that factor they agree to 0.05 as well
    book = pd.Series(TAM_STYLE_RATERS["book"])
    shrink = float(book @ fine / (fine @ fine))
    assert 0.95 < shrink < 0.96
    np.testing.assert_allclose(raters.loc[book.index] * shrink, book, atol=0.05)
