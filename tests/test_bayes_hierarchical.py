"""Hierarchical person mode: theta_mq = theta_m + u_mq on data simulated with response effects."""

import numpy as np
import pytest

import irtpeer
from irtpeer import ModelSpec

pytest.importorskip("pymc", reason="the 'bayes' extra (pymc, nutpie, arviz) is not installed")


@pytest.fixture(scope="module")
def hier():
    # 8 models x 50 questions x 2 judges x 2 items on a 0..3 scale, with a random effect of
    # SD 0.7 per model x question (the truth of the hierarchical mode)
    sim = irtpeer.simulate(models=8, questions=50, judges=2, dimensions="A", items_per_dimension=2,
                           categories=4, missing=0.0, response_sd=0.7, seed=3)
    from irtpeer.estimators import get_estimator

    est = get_estimator("bayes")(ModelSpec(person_mode="hierarchical"), draws=500, tune=500,
                                 chains=2, seed=5, hdi_prob=0.90)
    return sim, est.fit(irtpeer.load_ratings(sim.ratings)).calibration_


def test_ninety_percent_intervals_cover_the_truth(hier):
    sim, cal = hier
    m = cal.measures.merge(sim.truth, on=["dimension", "facet", "element"], suffixes=("", "_true"))
    assert set(m["facet"]) == {"model", "response", "question", "judge", "item", "threshold"}
    assert len(m) == 8 + 400 + 50 + 2 + 2 + 3
    inside = (m["hdi_low"] <= m["measure_true"]) & (m["measure_true"] <= m["hdi_high"])
    assert 0.85 <= inside.mean() <= 0.95, inside.groupby(m["facet"]).mean()
    row = cal.convergence.iloc[0]
    assert abs(row["sigma_u"] - 0.7) < 0.25 and row["divergences"] == 0


def test_model_measure_is_theta_m_and_carries_question_uncertainty(hier):
    _, cal = hier
    models = cal.facet("model").set_index("element")
    s = cal.scores.set_index("model")
    np.testing.assert_allclose(s["A"], models.loc[s.index, "measure"])
    # theta_m's SD includes sigma_u / sqrt(questions): larger than the mean response's SD would
    # be from the ratings alone
    resp = cal.facet("response")
    assert (models["se"] > 0.7 / np.sqrt(50) * 0.8).all()
    assert cal.draws["A"].shape == (1000, 8)
    assert len(resp) == 400 and resp["element"].str.contains(r"\|q").all()
