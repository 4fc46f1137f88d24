"""The design's quick paths: which codes occur (slice by slice) and the connectivity test on a
subset of the observations, with its fallback to every observation when the subset misses."""

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer._design import _codes, _reached_in_two_steps, _used, check_connected
from irtpeer._errors import DesignError


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32])
def test_used_codes_across_slices_equal_a_count(dtype):
    rng = np.random.default_rng(0)
    codes = rng.choice(np.array([0, 2, 3, 7, 40], dtype=dtype), size=1000)
    codes[-1] = 41  # only in the last, partial slice
    got = _used(codes, 50, step=64)
    np.testing.assert_array_equal(got, np.bincount(codes, minlength=50) > 0)


@pytest.mark.parametrize("at", [0, 500, 998])
def test_used_codes_when_one_code_occurs_once_off_the_sampled_rows(at):
    """Every code but one is in the sampled rows and the first slice: the scan goes on until
    the last one is seen, wherever it is (the early stop only ever stops on all codes seen)."""
    codes = np.tile(np.arange(10, dtype=np.int8), 100)
    codes[codes == 9] = 8
    codes[at + 1] = 9  # not a multiple of the stride: off the sample
    assert (at + 1) % 7 != 0
    np.testing.assert_array_equal(_used(codes, 11, step=64, stride=7),
                                  np.arange(11) < 10)
    np.testing.assert_array_equal(_used(codes[codes != 9], 10, step=64, stride=7),
                                  np.arange(10) < 9)


def test_unused_categories_are_dropped_and_codes_renumbered():
    col = pd.Series(pd.Categorical(["b", "d", "b", "a"], categories=["a", "b", "c", "d", "e"]))
    codes, labels = _codes(col)
    assert list(labels) == ["a", "b", "d"]
    assert list(labels[codes]) == ["b", "d", "b", "a"]


def _two_blocks_and_one_link(n_per_block=2000):
    """Models m0-m4 and m5-m9, each with its own questions and judges; one judgment links the
    two blocks."""
    rng = np.random.default_rng(1)
    parts = []
    for b in range(2):
        parts.append(pd.DataFrame({
            "model": [f"m{5 * b + i}" for i in rng.integers(0, 5, n_per_block)],
            "question": [f"q{40 * b + i}" for i in rng.integers(0, 40, n_per_block)],
            "judge": [f"j{2 * b + i}" for i in rng.integers(0, 2, n_per_block)],
            "score": rng.integers(0, 2, n_per_block),
        }))
    link = pd.DataFrame({"model": ["m0"], "question": ["q0"], "judge": ["j3"], "score": [1]})
    return pd.concat([parts[0], link, parts[1]], ignore_index=True)


def test_a_single_link_missed_by_the_subset_is_found_by_the_full_test():
    df = _two_blocks_and_one_link()
    ratings = irtpeer.load_ratings(df, duplicates="keep")
    d = irtpeer._design.build_designs(ratings, irtpeer.ModelSpec())[0]  # no DesignError
    idx, sizes = d.data.idx, d.data.sizes
    assert len(idx[0]) >= 13 * sum(sizes)  # the subset is tried ...
    hub = int(np.argmin(sizes))
    assert not _reached_in_two_steps([i[::13] for i in idx], sizes, hub)  # ... and misses
    assert _reached_in_two_steps(idx, sizes, hub)  # the one link is seen by the full test
    check_connected("all", ["model", "question", "judge"],
                    [d.person_labels, *d.facet_labels], idx, sizes)
    without = df.drop(index=2000).reset_index(drop=True)  # the link removed: two subsets
    with pytest.raises(DesignError, match="disconnected into 2 subsets"):
        irtpeer._design.build_designs(irtpeer.load_ratings(without, duplicates="keep"),
                                      irtpeer.ModelSpec())
