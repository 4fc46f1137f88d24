"""Fit statistics, Table 7 footer and Table 8 against an independent NumPy computation, and
the flags on data with a planted erratic judge."""

import numpy as np
import pandas as pd
import pytest
from analyses_sim import crossed, fit
from scipy import stats

from irtpeer.analyses import category_statistics, facet_summary, fit_statistics


def _small(K):
    rng = np.random.default_rng(5)
    return crossed(rng.normal(0, 1, 4), rng.normal(0, 0.8, 7), np.array([-0.4, 0.1, 0.3]),
                   np.array([-0.3, 0.3]), K=K, seed=11)


def _reference_fit(cal, frame):
    """Textbook formulas, one observation at a time (no code shared with irtpeer.analyses)."""
    meas = {(r.facet, r.element): r.measure for r in cal.measures.itertuples()}
    K = int(frame["score"].max())
    tau = [meas[("threshold", str(k))] for k in range(1, K + 1)] if K > 1 else []
    per_elem = {}
    for row in frame.itertuples():
        eta = (meas[("model", row.model)] - meas[("question", row.question)]
               - meas[("judge", row.judge)] - meas[("item", row.item)])
        num = np.array([np.exp(k * eta - sum(tau[:k])) for k in range(K + 1)])
        p = num / num.sum()
        e = sum(k * p[k] for k in range(K + 1))
        w = sum((k - e) ** 2 * p[k] for k in range(K + 1))
        c = sum((k - e) ** 4 * p[k] for k in range(K + 1))
        for key in [("model", row.model), ("question", row.question), ("judge", row.judge),
                    ("item", row.item)]:
            per_elem.setdefault(key, []).append((row.score, e, w, c, eta))
    out = {}
    for key, obs in per_elem.items():
        x, e, w, c, eta = map(np.array, zip(*obs))
        n = len(x)
        outfit = np.mean((x - e) ** 2 / w)
        infit = np.sum((x - e) ** 2) / np.sum(w)
        q_out = np.sqrt(np.sum(c / w**2) / n**2 - 1 / n)
        q_in = np.sqrt(np.sum(c - w**2)) / np.sum(w)
        zo = (outfit ** (1 / 3) - 1) * 3 / q_out + q_out / 3
        zi = (infit ** (1 / 3) - 1) * 3 / q_in + q_in / 3
        out[key] = (infit, outfit, zi, zo, np.corrcoef(x, eta)[0, 1])
    return out


@pytest.mark.parametrize("K", [1, 3])
def test_fit_statistics_match_textbook_formulas(K):
    frame = _small(K)
    cal, ratings = fit(frame)
    got = fit_statistics(cal, ratings)
    assert list(got[["dimension", "facet", "element"]].itertuples(index=False)) == list(
        cal.measures[["dimension", "facet", "element"]].astype(str).itertuples(index=False))
    ref = _reference_fit(cal, frame)
    rows = got[got["facet"] != "threshold"]
    assert len(rows) == len(ref)
    for r in rows.itertuples():
        exp = ref[(r.facet, r.element)]
        np.testing.assert_allclose([r.infit, r.outfit, r.infit_z, r.outfit_z, r.ptmeasure], exp,
                                   rtol=1e-7, atol=1e-9)
    assert got.loc[got["facet"] == "threshold", "infit"].isna().all()


def test_table7_footer_matches_numpy():
    cal, _ = fit(_small(3))
    summ = facet_summary(cal).set_index("facet")
    for facet in ["model", "question", "judge", "item"]:
        g = cal.measures[cal.measures["facet"] == facet]
        d, s = g["measure"].to_numpy(), g["se_model"].to_numpy()
        L = len(d)
        sd = np.sqrt(np.sum((d - d.mean()) ** 2) / L)
        rmse = np.sqrt(np.sum(s**2) / L)
        adj = np.sqrt(sd**2 - rmse**2) if sd > rmse else 0.0
        sep = adj / rmse
        w = 1 / s**2
        chi2 = np.sum(w * d**2) - np.sum(w * d) ** 2 / np.sum(w)
        row = summ.loc[facet]
        np.testing.assert_allclose(
            [row["sd"], row["rmse"], row["adj_sd"], row["separation"], row["strata"],
             row["reliability"], row["chi2"], row["p_value"]],
            [sd, rmse, adj, sep, (4 * sep + 1) / 3, adj**2 / sd**2, chi2, stats.chi2.sf(chi2, L - 1)],
            rtol=1e-10, atol=1e-12)
        assert row["df"] == L - 1
        assert row["sd_sample"] == pytest.approx(np.std(d, ddof=1))


def test_text_summary_needs_no_p_values_nor_scipy_special(tmp_path):
    """The footer without p-values is the footer less that column; the text summary (every
    `irtpeer score` prints it) does not import scipy.special for p-values it does not show."""
    import subprocess
    import sys

    cal, _ = fit(_small(1))
    full = facet_summary(cal)
    pd.testing.assert_frame_equal(facet_summary(cal, p_values=False),
                                  full.drop(columns=["p_value"]), check_exact=True)
    code = (
        "import sys, irtpeer\n"
        "sim = irtpeer.simulate(models=4, questions=20, judges=2, dimensions='A', seed=1)\n"
        "cal = irtpeer.TorchMFRM(device='cpu').fit(irtpeer.load_ratings(sim.ratings))"
        ".calibration_\n"
        "assert 'Facets' in cal.summary()\n"
        "print('scipy.special' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False", out.stderr


def test_table8_categories_sum_and_order():
    frame = _small(3)
    cal, ratings = fit(frame)
    cat = category_statistics(cal, ratings)
    counts = frame["score"].value_counts().sort_index()
    assert cat["count"].tolist() == counts.tolist()
    # at the MLE the thresholds' sufficient statistics are matched: expected = observed counts
    np.testing.assert_allclose(cat["expected_count"], cat["count"], rtol=1e-5)
    thr = cal.measures[cal.measures["facet"] == "threshold"]["measure"].tolist()
    assert cat["threshold"].iloc[1:].tolist() == pytest.approx(thr)
    assert not cat["disordered"].any() and cat.attrs["warnings"] == []


def test_disordered_threshold_is_flagged():
    # category 2 is rare (its threshold sits below the previous one): a classic disordering
    rng = np.random.default_rng(1)
    frame = crossed(rng.normal(0, 1, 5), rng.normal(0, 0.8, 30), np.array([-0.4, 0.1, 0.3]),
                    np.array([-0.3, 0.3]), K=3, seed=2)
    rare = (frame["score"] == 2) & (rng.random(len(frame)) < 0.85)
    frame.loc[rare, "score"] = rng.choice([1, 3], rare.sum())
    cal, ratings = fit(frame)
    cat = category_statistics(cal, ratings)
    assert cat["disordered"].any()
    assert any("disordered" in w for w in cat.attrs["warnings"])


def test_erratic_judge_flagged_and_only_it():
    rng = np.random.default_rng(3)
    frame = crossed(rng.normal(0, 1, 6), rng.normal(0, 0.8, 60), np.array([-0.5, 0.0, 0.2, 0.3]),
                    np.array([-0.4, 0.1, 0.3]), erratic=2, seed=4)
    cal, ratings = fit(frame)
    f = fit_statistics(cal, ratings)
    judges = f[f["facet"] == "judge"].set_index("element")
    assert judges.loc["j2", "fit_flag"] == "underfit"
    assert judges.loc["j2", "infit"] > 1.2 and judges.loc["j2", "infit_z"] > 3
    assert (judges.drop("j2")["fit_flag"] == "").all()
    assert judges.loc["j2", "ptmeasure"] < judges.drop("j2")["ptmeasure"].min()
    # the real standard error widens for the misfitting judge only
    real = facet_summary(cal, ratings, se="real").set_index("facet")
    model = facet_summary(cal).set_index("facet")
    assert real.loc["judge", "rmse"] > model.loc["judge", "rmse"]


def test_extreme_elements_have_no_fit():
    frame = _small(1)
    frame.loc[frame["question"] == "q000", "score"] = 1  # an all-maximum question
    cal, ratings = fit(frame)
    f = fit_statistics(cal, ratings).set_index(["facet", "element"])
    assert cal.measures.set_index(["facet", "element"]).loc[("question", "q000"), "status"] == \
        "extreme_max"
    assert np.isnan(f.loc[("question", "q000"), "infit"])
    assert np.isfinite(f.loc[("question", "q001"), "infit"])
    summ = facet_summary(cal).set_index("facet")
    assert summ.loc["question", "extreme"] == 1


def test_fit_statistics_in_slices_equal_one_pass():
    """Judgments visited a few at a time (the memory of a slice, not of every judgment) give
    the statistics of one pass, with averaged duplicates (weights) and an extreme question."""
    import irtpeer

    frame = _small(3)
    frame.loc[frame["question"] == "q000", "score"] = 3
    frame = pd.concat([frame, frame.iloc[:40]], ignore_index=True)
    ratings = irtpeer.load_ratings(frame, duplicates="mean")
    assert ratings.weights() is not None
    cal = irtpeer.TorchMFRM(device="cpu").fit(ratings).calibration_
    whole = fit_statistics(cal, ratings)
    sliced = fit_statistics(cal, ratings, step=7)
    pd.testing.assert_frame_equal(whole, sliced, rtol=1e-10, atol=1e-12)
    assert whole["infit"].notna().sum() > 10 and np.isnan(
        whole.set_index(["facet", "element"]).loc[("question", "q000"), "infit"])


def test_chunks_within_a_slice_keep_the_slice_sums_to_the_last_bit(monkeypatch):
    """Each slice's sums are carried on chunk after chunk (for the CPU cache) in judgment order,
    exactly as one bincount of the slice: any chunk length gives the same bits, with weights,
    an extreme question and a rating scale."""
    import irtpeer
    from irtpeer.analyses import fit as fitmod

    frame = _small(3)
    frame.loc[frame["question"] == "q000", "score"] = 3
    frame = pd.concat([frame, frame.iloc[:40]], ignore_index=True)
    ratings = irtpeer.load_ratings(frame, duplicates="mean")
    cal = irtpeer.TorchMFRM(device="cpu").fit(ratings).calibration_
    slices = {}
    for chunk in (1 << 16, 5, 64):
        monkeypatch.setattr(fitmod, "_CHUNK", chunk)
        slices[chunk] = fit_statistics(cal, ratings, step=100)
    reference = slices.pop(1 << 16)  # chunk longer than the slice: one chunk per slice
    for got in slices.values():
        pd.testing.assert_frame_equal(reference, got, check_exact=True)
    assert reference["infit"].notna().sum() > 10


def test_label_order_and_unused_categories_do_not_move_statistics():
    """The ratings' codes are matched to the measures' elements: a categorical in another order
    with an unused label gives the statistics of plain text labels."""
    import irtpeer

    frame = _small(1)
    cal, ratings = fit(frame)
    plain = fit_statistics(cal, ratings)
    shuffled = frame.copy()
    for col in ("model", "question", "judge", "item"):
        cats = sorted(frame[col].unique(), reverse=True) + ["unused"]
        shuffled[col] = pd.Categorical(frame[col], categories=cats)
    pd.testing.assert_frame_equal(plain, fit_statistics(cal, irtpeer.load_ratings(shuffled)),
                                  check_exact=True)


def test_ratings_that_do_not_match_are_refused():
    import irtpeer

    cal, _ = fit(_small(1))
    other = _small(1)
    other["judge"] = other["judge"].str.replace("j0", "jX")
    with pytest.raises(irtpeer.IrtpeerError, match="judge 'jX'"):
        fit_statistics(cal, irtpeer.load_ratings(other))
    pd.testing.assert_index_equal(cal.measures.columns[:3], pd.Index(["dimension", "facet",
                                                                       "element"]))


def test_response_mode_calibration_is_read_from_its_measures():
    """In person mode 'response' the person facet is the model x question response: the
    analyses take its measures from the table (no re-estimation)."""
    import irtpeer
    from irtpeer.analyses import equate_dimensions, response_measures

    sim = irtpeer.simulate(models=4, questions=15, judges=2, dimensions="A,T", seed=2,
                           response_sd=0.5)
    ratings = irtpeer.load_ratings(sim.ratings)
    cal = irtpeer.TorchMFRM(irtpeer.ModelSpec(person_mode="response"), device="cpu").fit(
        ratings).calibration_
    f = fit_statistics(cal, ratings)
    assert (f["facet"] == "response").sum() == 2 * 4 * 15 and f["infit"].notna().sum() > 100
    rm = response_measures(cal, ratings)
    table = cal.measures[cal.measures["facet"] == "response"]
    got = rm.assign(element=rm["model"] + "|" + rm["question"]).merge(
        table, on=["dimension", "element"], suffixes=("", "_cal"))
    assert len(got) == 2 * 4 * 15
    np.testing.assert_allclose(got["measure"], got["measure_cal"])
    eq = equate_dimensions(cal, ratings, n_boot=100)
    assert eq.table["verdict"].isin(["comparable", "needs linking"]).all()
