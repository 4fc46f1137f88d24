"""Common-person equating across dimensions: verdicts and the linked composite on simulated
data where the four dimensions share the same responses' truth and C's unit is stretched 1.5x."""

import numpy as np
import pandas as pd
import pytest
from analyses_sim import crossed, fit

import irtpeer
from irtpeer.analyses import equate_dimensions


@pytest.fixture(scope="module")
def stretched():
    rng = np.random.default_rng(2)
    theta = rng.normal(0, 1, 8)

    def dim(name, scale, seed):
        r = np.random.default_rng(seed)
        return crossed(scale * theta, r.normal(0, 0.8, 50), r.normal(0, 0.5, 3),
                       r.normal(0, 0.5, 4), K=4, dimension=name, seed=seed)

    frame = pd.concat([dim("A", 1, 21), dim("T", 1, 22), dim("E", 1, 23), dim("C", 1.5, 24)])
    cal, ratings = fit(frame)
    return theta, cal, ratings, equate_dimensions(cal, ratings, n_boot=400, seed=3)


def test_verdicts_comparable_and_needs_linking(stretched):
    _, _, _, res = stretched
    t = res.table
    assert list(t.columns[:9]) == ["dim_a", "dim_b", "shift", "slope", "slope_lo", "slope_hi",
                                   "correlation", "share_within_bands", "verdict"]
    v = {(r.dim_a, r.dim_b): r for r in t.itertuples()}
    for pair in [("A", "E"), ("A", "T"), ("E", "T")]:
        assert v[pair].verdict == "comparable"
        assert v[pair].slope_lo <= 1 <= v[pair].slope_hi
        assert v[pair].share_within_bands > 0.93
    for pair in [("A", "C"), ("C", "E"), ("C", "T")]:
        assert v[pair].verdict == "needs linking"
    assert v[("A", "C")].slope == pytest.approx(1.5, abs=0.12)
    assert v[("A", "C")].slope_lo > 1.3
    # one truth behind every dimension: the disattenuated correlation is about 1
    assert t["correlation"].between(0.95, 1.05).all()


def test_linked_composite_recovers_the_truth(stretched):
    theta, _, _, res = stretched
    linked = res.linked.set_index("model").loc[[f"m{i}" for i in range(8)]]
    # on the truth's unit (that of E), the linked Peer has slope 1 against the generating theta;
    # the plain average of E and the stretched C has slope (1 + 1.5) / 2
    slope_linked = np.polyfit(theta, linked["peer_linked"], 1)[0]
    slope_plain = np.polyfit(theta, linked["peer"], 1)[0]
    assert slope_linked == pytest.approx(1.0, abs=0.08)
    assert slope_plain == pytest.approx(1.25, abs=0.08)
    # Dignity's dimensions are comparable: linking leaves it as it is
    np.testing.assert_allclose(linked["dignity_linked"], linked["dignity"])


def test_equating_needs_two_dimensions():
    sim = irtpeer.simulate(models=3, questions=10, judges=2, dimensions="A", seed=1)
    ratings = irtpeer.load_ratings(sim.ratings)
    cal = irtpeer.TorchMFRM(device="cpu").fit(ratings).calibration_
    with pytest.raises(irtpeer.IrtpeerError, match="at least two dimensions"):
        equate_dimensions(cal, ratings)
