"""Bias/interaction (FACETS Tables 13-14): each cell against statsmodels, and a planted bias."""

import numpy as np
import pytest
import statsmodels.api as sm
from analyses_sim import crossed, fit
from scipy import stats

import irtpeer
from irtpeer.analyses import bias_contrasts, bias_interaction


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(3)
    frame = crossed(rng.normal(0, 1, 6), rng.normal(0, 0.8, 40),
                    np.array([-0.5, 0.0, 0.2, 0.3, 0.1]), np.array([-0.4, 0.1, 0.3]),
                    bias={(1, 3): -1.5}, seed=4)
    cal, ratings = fit(frame)
    return frame, cal, ratings, bias_interaction(cal, ratings, ("judge", "model"))


def test_planted_judge_model_bias_is_the_only_flag(planted):
    _, _, _, table = planted
    assert list(table.columns[:11]) == ["dimension", "facet_a", "element_a", "facet_b",
                                        "element_b", "count", "bias", "se", "t", "df", "p_value"]
    assert len(table) == 5 * 6
    flagged = table[table["flag"]]
    assert flagged[["element_a", "element_b"]].values.tolist() == [["j1", "m3"]]
    row = flagged.iloc[0]
    assert row["bias"] > 0.8  # planted: j1 scores m3 1.5 logits lower (harsher) -> positive bias
    assert row["observed"] < row["expected"]


def test_planted_bias_is_not_misfit(planted):
    """The fit analysis does not mistake the judge x model bias for an erratic judge: on these
    data no element is flagged (the erratic judge is planted in test_analyses_fit)."""
    from irtpeer.analyses import fit_statistics

    _, cal, ratings, _ = planted
    assert (fit_statistics(cal, ratings)["fit_flag"] == "").all()


def test_cells_match_statsmodels_glm_with_offset(planted):
    """One extra parameter per cell with the main effects anchored = an intercept-only logistic
    GLM of the cell's scores with the anchored linear predictor as offset (statsmodels 0.15)."""
    frame, cal, _, table = planted
    meas = {(r.facet, r.element): r.measure for r in cal.measures.itertuples()}
    eta = np.array([meas[("model", m)] - meas[("question", q)] - meas[("judge", j)]
                    - meas[("item", i)] for m, q, j, i in
                    frame[["model", "question", "judge", "item"]].itertuples(index=False)])
    for j, m in [("j1", "m3"), ("j0", "m0"), ("j4", "m5")]:
        sel = ((frame["judge"] == j) & (frame["model"] == m)).to_numpy()
        glm = sm.GLM(frame["score"].to_numpy()[sel], np.ones((sel.sum(), 1)),
                     family=sm.families.Binomial(), offset=eta[sel]).fit(tol=1e-12)
        row = table[(table["element_a"] == j) & (table["element_b"] == m)].iloc[0]
        assert row["bias"] == pytest.approx(-glm.params[0], abs=1e-7)
        assert row["se"] == pytest.approx(glm.bse[0], rel=1e-6)
        assert row["df"] == sel.sum() - 1
        assert row["p_value"] == pytest.approx(2 * stats.t.sf(abs(row["t"]), row["df"]))


def test_contrasts_use_joint_se_and_welch_df(planted):
    _, _, _, table = planted
    con = bias_contrasts(table)
    r = con[(con["element_a"] == "j1") & (con["element_b_1"] == "m3")].iloc[0]
    a = table[(table["element_a"] == "j1") & (table["element_b"] == "m3")].iloc[0]
    b = table[(table["element_a"] == "j1") & (table["element_b"] == r["element_b_2"])].iloc[0]
    se = np.sqrt(a["se"] ** 2 + b["se"] ** 2)
    welch = se**4 / (a["se"] ** 4 / a["df"] + b["se"] ** 4 / b["df"])
    assert r["contrast"] == pytest.approx(a["bias"] - b["bias"])
    assert r["se"] == pytest.approx(se) and r["df"] == pytest.approx(welch)
    assert r["p_value"] < 1e-3
    assert len(con) == 5 * (6 * 5 // 2)


def test_extreme_cell_uses_half_point_adjustment():
    rng = np.random.default_rng(0)
    frame = crossed(rng.normal(0, 1, 4), rng.normal(0, 0.5, 10), np.array([-0.3, 0.3]),
                    np.array([0.0, 0.2]), seed=1)
    frame.loc[(frame["judge"] == "j0") & (frame["model"] == "m1"), "score"] = 1
    cal, ratings = fit(frame)
    t = bias_interaction(cal, ratings, "judge,model")
    cell = t[(t["element_a"] == "j0") & (t["element_b"] == "m1")].iloc[0]
    assert cell["status"] == "extreme_max" and np.isfinite(cell["bias"]) and cell["bias"] < 0


def test_bad_facet_pairs_are_one_line_errors(planted):
    _, cal, ratings, _ = planted
    with pytest.raises(irtpeer.IrtpeerError, match="'rater' is not a column"):
        bias_interaction(cal, ratings, "rater,model")
    with pytest.raises(irtpeer.IrtpeerError, match="dimension column"):
        bias_interaction(cal, ratings, "judge,dimension")
    with pytest.raises(irtpeer.IrtpeerError, match="two different facets"):
        bias_interaction(cal, ratings, "judge")
