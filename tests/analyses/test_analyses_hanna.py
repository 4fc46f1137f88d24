"""The analyses on real LLM-judge ratings (HANNA, ../shared/data; see its README)."""

import numpy as np
import pytest
from irtpeer_paths import SHARED_DATA

import irtpeer
from irtpeer.analyses import facet_summary, fit_statistics, question_uncertainty


@pytest.fixture(scope="module")
def hanna():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not available: {SHARED_DATA} is absent (CI has it beside the "
                    f"checkout)")
    ratings = irtpeer.load_ratings(SHARED_DATA / "hanna_long.csv", score="score_rounded")
    cal = irtpeer.TorchMFRM(device="cpu").fit(ratings).calibration_
    return cal, ratings


def test_human_slots_underfit_and_averaged_llm_scores_overfit(hanna):
    """Human_1..3 are slots filled by different MTurk workers (README): erratic as one 'judge',
    so they underfit; LLM scores are means of 3 samples, rounded: muted, below 1."""
    cal, ratings = hanna
    fit = fit_statistics(cal, ratings)
    judges = fit[fit["facet"] == "judge"].groupby("element")["infit"].mean()
    humans = judges[judges.index.str.startswith("Human")]
    llms = judges.drop(humans.index)
    assert (humans > 1.5).all() and len(humans) == 3
    assert llms.max() < humans.min()
    flags = fit[(fit["facet"] == "judge") & fit["element"].str.startswith("Human")]["fit_flag"]
    assert (flags == "underfit").all()
    # 11 systems are told apart far beyond their errors on every criterion
    fs = facet_summary(cal)
    assert (fs.loc[fs["facet"] == "model", "reliability"] > 0.99).all()


def test_question_clustered_se_exceeds_conditional(hanna):
    """NOTES: conditional model SEs ~0.03; prompts as a sample roughly double them."""
    cal, ratings = hanna
    q = question_uncertainty(cal, ratings)
    sc = cal.scores.merge(q.se, on="model")
    for d in cal.dimensions:
        ratio = (sc[f"{d}_se_q"] / sc[f"{d}_se"]).to_numpy()
        assert np.all(ratio > 1.2), d
        assert 0.02 < sc[f"{d}_se"].mean() < 0.05
