"""Stability (`irtpeer compare --friedman`): Friedman, Kendall's W, tau-b and Spearman against
SciPy and pingouin, and the behaviour the issue asks for on simulated data."""

import numpy as np
import pandas as pd
import pingouin as pg
import pytest
from analyses_sim import draw_scores, fit
from scipy import stats

from irtpeer.analyses import friedman_test, posthoc, stability


def _blocks(seed=0, n=12, k=4):
    rng = np.random.default_rng(seed)
    # integer values: ties inside blocks exercise the tie correction
    return pd.DataFrame(rng.integers(0, 4, (n, k)), columns=[f"m{i}" for i in range(k)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_friedman_and_w_agree_with_scipy_and_pingouin(seed):
    wide = _blocks(seed)
    res = friedman_test(wide)
    q, p = stats.friedmanchisquare(*[wide[c] for c in wide])  # SciPy 1.17, tie-corrected
    assert res["statistic"] == pytest.approx(q) and res["p_value"] == pytest.approx(p)
    long = wide.rename_axis("block").reset_index().melt(id_vars="block", var_name="model")
    chi = pg.friedman(long, dv="value", within="model", subject="block")  # pingouin 0.7
    assert res["kendall_w"] == pytest.approx(chi["W"].iloc[0])
    assert res["statistic"] == pytest.approx(chi["Q"].iloc[0])
    assert res["p_value"] == pytest.approx(chi["p_unc"].iloc[0])
    f = pg.friedman(long, dv="value", within="model", subject="block", method="f")
    assert res["f"] == pytest.approx(f["F"].iloc[0])
    assert res["f_df1"] == pytest.approx(f["ddof1"].iloc[0])
    assert res["f_df2"] == pytest.approx(f["ddof2"].iloc[0])
    assert res["f_p_value"] == pytest.approx(f["p_unc"].iloc[0])


def test_posthoc_wilcoxon_matches_scipy_with_holm():
    from statsmodels.stats.multitest import multipletests

    wide = _blocks(4, n=20, k=3) + np.arange(3)
    ph = posthoc(wide, "wilcoxon")
    pairs = [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]
    # pingouin 0.7 calls SciPy's wilcoxon with the continuity correction
    raw = [stats.wilcoxon(wide[a], wide[b], correction=True).pvalue for a, b in pairs]
    got = ph.set_index(["model_a", "model_b"])
    assert got.loc[pairs, "p_value"].to_numpy() == pytest.approx(raw, rel=1e-6)
    assert got.loc[pairs, "p_adjusted"].to_numpy() == pytest.approx(
        multipletests(raw, method="holm")[1], rel=1e-6)
    long = wide.rename_axis("block").reset_index().melt(id_vars="block", var_name="model")
    pgt = pg.pairwise_tests(data=long, dv="value", within="model", subject="block",
                            parametric=False, padjust="holm").set_index(["A", "B"])
    assert got.loc[pairs, "p_adjusted"].to_numpy() == pytest.approx(
        pgt.loc[pairs, "p_corr"].to_numpy(), rel=1e-6)
    assert got.loc[pairs, "statistic"].to_numpy() == pytest.approx(pgt.loc[pairs, "W_val"])
    # Nemenyi on mean ranks: q = |dR| / sqrt(k(k+1)/(6n)), p from the studentised range
    ne = posthoc(wide, "nemenyi").set_index(["model_a", "model_b"])
    R = wide.rank(axis=1).mean()
    q = abs(R["m0"] - R["m2"]) / np.sqrt(3 * 4 / (6 * 20))
    assert ne.loc[("m0", "m2"), "statistic"] == pytest.approx(q)
    assert ne.loc[("m0", "m2"), "p_value"] == pytest.approx(
        stats.studentized_range.sf(q * np.sqrt(2), 3, np.inf))
    assert (posthoc(wide, "conover")["p_adjusted"] >= posthoc(wide, "conover")["p_value"]).all()


def _design(seed, theta, alpha, judge_of, Q=30, items=6):
    """Each response (model x question) rated by one judge ``judge_of(model, rng)`` on ``items``
    binary items."""
    rng = np.random.default_rng(seed)
    M = len(theta)
    beta = rng.normal(0, 0.7, Q)
    delta = np.linspace(-0.8, 0.8, items)
    rows = []
    for m in range(M):
        for q in range(Q):
            j = judge_of(m, rng)
            eta = theta[m] - beta[q] - alpha[j] - delta
            for r, s in enumerate(draw_scores(eta, 1, rng)):
                rows.append((f"m{m}", f"q{q:03d}", f"j{j}", f"i{r}", s))
    return pd.DataFrame(rows, columns=["model", "question", "judge", "item", "score"])


def test_noise_only_models_are_not_significant_in_most_seeds():
    alpha = np.array([-0.4, 0.0, 0.4])
    ok = 0
    for seed in range(8):
        frame = _design(seed, np.zeros(4), alpha, lambda m, rng: rng.integers(0, 3), Q=25, items=4)
        cal, ratings = fit(frame)
        fr = stability(cal, ratings, posthoc_method=None).friedman
        assert set(fr["method"]) == {"raw", "zscore", "mfrm"}
        ok += bool((fr["p_value"] > 0.05).all())
    assert ok >= 6  # under H0 each method exceeds 0.05 in 95% of seeds


def test_mfrm_has_larger_kendall_w_than_raw_when_judges_differ_and_are_unbalanced():
    # judge severities -1.6..1.6; model m meets judge m half of the time, so the better a model,
    # the harsher its usual judge: raw means hide the models' differences, MFRM removes them
    alpha = np.linspace(-1.6, 1.6, 5)

    def judge_of(m, rng):
        return m if rng.random() < 0.5 else rng.integers(0, 5)

    frame = _design(7, np.linspace(-0.8, 0.8, 5), alpha, judge_of, Q=40)
    cal, ratings = fit(frame)
    res = stability(cal, ratings, posthoc_method=None)
    w = res.friedman.set_index("method")["kendall_w"]
    assert w["mfrm"] > w["raw"] + 0.05
    assert res.friedman.set_index("method").loc["mfrm", "p_value"] < 0.05
    # Table 2 shape and the rankings between methods (tau-b and Spearman as SciPy computes them)
    comp = res.comparison
    assert set(comp.columns) >= {"method", "target", "model", "mean", "sd", "n_questions"}
    wide = comp.pivot(index="model", columns="method", values="mean")
    row = res.rankings.set_index(["method_a", "method_b"]).loc[("raw", "mfrm")]
    assert row["kendall_tau_b"] == pytest.approx(stats.kendalltau(wide["raw"], wide["mfrm"])[0])
    assert row["spearman"] == pytest.approx(stats.spearmanr(wide["raw"], wide["mfrm"])[0])
    assert row["kendall_tau_b"] == pytest.approx(
        pg.corr(wide["raw"], wide["mfrm"], method="kendall")["r"].iloc[0])
    assert row["spearman"] == pytest.approx(
        pg.corr(wide["raw"], wide["mfrm"], method="spearman")["r"].iloc[0])


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    from irtpeer.analyses._pvalues import holm

    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(rng.integers(1, 40)) ** 3
        p[: len(p) // 3] = p[0]  # ties
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])
