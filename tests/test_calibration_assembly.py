"""The per-model tables assembled from the estimator's records: covariance frames taken over
without a copy, reindexed to every model when the dimensions have different models."""

import numpy as np

import irtpeer


def test_model_covariances_ses_and_composites_when_models_differ_by_dimension():
    sim = irtpeer.simulate(models=5, questions=25, judges=2, dimensions=("E", "C"), seed=3)
    df = sim.ratings
    df = df[~((df["dimension"] == "C") & (df["model"] == df["model"].iloc[0]))]  # one model: E only
    cal = irtpeer.TorchMFRM(device="cpu").fit(irtpeer.load_ratings(df)).calibration_
    models = cal.scores["model"].tolist()
    missing = df["model"].iloc[0]
    for d in ("E", "C"):
        cov = cal.cov[d]
        assert cov.index.tolist() == models and cov.columns.tolist() == models
        np.testing.assert_allclose(cal.scores[f"{d}_se"], np.sqrt(np.diag(cov.to_numpy())))
        np.testing.assert_allclose(cov.to_numpy(), cov.to_numpy().T)
    assert cal.cov["C"].loc[missing].isna().all() and cal.cov["E"].loc[missing].notna().all()
    peer = (cal.cov["E"] + cal.cov["C"]) / 4
    np.testing.assert_allclose(cal.cov["peer"].to_numpy(), peer.to_numpy())
    np.testing.assert_allclose(cal.scores["peer_se"], np.sqrt(np.diag(peer.to_numpy())))
    assert not np.shares_memory(cal.cov["E"].to_numpy(), cal.cov["C"].to_numpy())
