"""Per-judgment counts taken slice by slice: the raw/Z score columns from (person, judge, score)
cell counts, and the duplicate check's bitmap of keys, whatever the slice length."""

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer import _calibration
from irtpeer.ratings import _no_duplicates


def _groupby_raw_z(df: pd.DataFrame, judge: bool):
    s = df["score"].astype(float)
    raw = s.groupby(df["model"]).mean()
    if not judge:
        return raw, None
    g = s.groupby(df["judge"])
    z = (s - g.transform("mean")) / g.transform("std")
    return raw, z.groupby(df["model"]).mean()


@pytest.mark.parametrize("step", [5, 64, 1 << 22])
@pytest.mark.parametrize("judge", [True, False])
def test_unweighted_cell_counts_in_any_slices_match_a_groupby(step, judge, monkeypatch):
    monkeypatch.setattr(_calibration, "_STEP", step)
    sim = irtpeer.simulate(models=6, questions=30, judges=3, dimensions="A", categories=4,
                           seed=7).ratings
    df = sim[sim["score"].notna()].reset_index(drop=True)
    if not judge:
        df = df[df["judge"] == "judge-1"].drop(columns="judge").reset_index(drop=True)
    r = irtpeer.load_ratings(df, facets=["question", "judge", "item"] if judge else
                             ["question", "item"])
    assert r.weights() is None
    raw, z = _calibration._raw_and_z(r, r.dimensions)
    want_raw, want_z = _groupby_raw_z(df, judge)
    np.testing.assert_allclose(raw["A"].reindex(want_raw.index), want_raw, rtol=1e-12)
    if judge:
        np.testing.assert_allclose(z["A"].reindex(want_z.index), want_z, rtol=1e-10, atol=1e-12)
    else:
        assert z is None


@pytest.mark.parametrize("step", [3, 100, 1 << 18])
def test_duplicate_keys_are_found_in_any_slice(step):
    i = np.random.default_rng(3).permutation(40)  # every (i % 8, i // 8) once, shuffled
    keys = pd.DataFrame({"model": pd.Categorical(i % 8), "question": pd.Categorical(i // 8)})
    assert not keys.duplicated().any()
    assert _no_duplicates(keys, ["model", "question"], step=step)
    twice = pd.concat([keys, keys.iloc[[0]]], ignore_index=True)  # the repeat in the last slice
    assert not _no_duplicates(twice, ["model", "question"], step=step)
