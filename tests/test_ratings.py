"""Loading and validating the ratings table: every bad input gets a message naming the column,
the value and what to do."""

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer import RatingsError


def table(n=4):
    return pd.DataFrame(
        {
            "model": ["m1", "m2"] * (n // 2),
            "question": [f"q{i // 2}" for i in range(n)],
            "judge": "j1",
            "item": "A1",
            "dimension": "A",
            "score": [1, 0] * (n // 2),
        }
    )


def test_parquet_and_csv_give_the_same_table(tmp_path):
    sim = irtpeer.simulate(models=3, questions=10, judges=2, seed=0)
    sim.ratings.to_parquet(tmp_path / "r.parquet")
    sim.ratings.to_csv(tmp_path / "r.csv", index=False)
    a = irtpeer.load_ratings(tmp_path / "r.parquet")
    b = irtpeer.load_ratings(tmp_path / "r.csv")
    assert a.facets == b.facets == ["question", "judge", "item"]
    assert a.dimension == "dimension" and a.dimensions == ["A", "C", "E", "T"]
    assert len(a) == len(b) == sim.ratings["score"].notna().sum()
    assert (a.data["_score"].to_numpy() == b.data["_score"].to_numpy()).all()


def test_null_scores_are_missing_not_zero():
    df = table(6)
    df["score"] = pd.array([1, None, 0, 1, None, 0], dtype="Int64")
    r = irtpeer.load_ratings(df)
    assert r.summary["null_scores"] == 2 and r.summary["rows_used"] == 4
    assert r.data["_score"].tolist() == [1, 0, 1, 0]
    assert any("2 of 6 judgments have no score" in n for n in r.notes)


def test_column_mapping_for_facets_style_data():
    df = pd.DataFrame({"junior": ["a", "b"], "senior": ["x", "y"], "trait": ["t", "t"], "rating": [3, 5]})
    r = irtpeer.load_ratings(df, person="junior", facets="senior,trait", score="rating")
    assert r.person == "junior" and r.facets == ["senior", "trait"] and r.dimension is None
    assert r.dimensions == ["all"]


def test_missing_columns_are_named_with_the_fix():
    with pytest.raises(RatingsError) as e:
        irtpeer.load_ratings(table().drop(columns=["score"]))
    assert "'score' not found" in str(e.value) and "--score" in str(e.value)
    assert "available columns: model, question, judge, item, dimension" in str(e.value)
    with pytest.raises(RatingsError, match="'rater' not found"):
        irtpeer.load_ratings(table(), facets=["question", "rater"])
    with pytest.raises(RatingsError, match="dimension column 'dim' not found"):
        irtpeer.load_ratings(table(), dimension="dim")
    with pytest.raises(RatingsError, match="none of the default facet columns"):
        irtpeer.load_ratings(table()[["model", "score"]])


def test_non_integer_scores_name_values_and_rows():
    df = table(6)
    df["score"] = [1, 0.5, 0, 1, 2.5, 0]
    with pytest.raises(RatingsError) as e:
        irtpeer.load_ratings(df)
    msg = str(e.value)
    assert "2 non-integer score(s) (0.5, 2.5)" in msg and "data rows 2, 5" in msg
    assert "score_rounded" in msg
    df["score"] = ["1", "yes", "0", "1", "1", "0"]
    with pytest.raises(RatingsError, match=r"1 non-numeric score\(s\) \('yes'\) in data row 2"):
        irtpeer.load_ratings(df)
    df["score"] = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]  # integer-valued floats are fine
    r = irtpeer.load_ratings(df)
    assert r.data["_score"].dtype == np.int8 and r.data["_score"].tolist() == [1, 0, 0, 1, 1, 0]


def test_out_of_range_scores():
    df = table(6)
    df["score"] = [1, 0, -1, 1, 0, 7]
    with pytest.raises(RatingsError) as e:
        irtpeer.load_ratings(df, score_range=(0, 1))
    assert "2 score(s) outside the range 0..1 (values -1, 7)" in str(e.value)
    assert "data rows 3, 6" in str(e.value)
    # binary scale with more categories is also out of range
    sim = irtpeer.simulate(models=3, questions=10, judges=2, dimensions="A", categories=3, seed=0)
    with pytest.raises(RatingsError, match="scale 'binary' but dimension 'A' has scores 0, 1, 2"):
        irtpeer.TorchMFRM(irtpeer.ModelSpec(scale="binary")).fit(irtpeer.load_ratings(sim.ratings))


def test_duplicated_judgments_are_reported():
    df = pd.concat([table(), table().iloc[:1]], ignore_index=True)
    with pytest.raises(RatingsError) as e:
        irtpeer.load_ratings(df)
    msg = str(e.value)
    assert "2 rows are duplicated judgments (1 person × facet combinations" in msg
    assert "model='m1'" in msg and "--duplicates keep" in msg and "--duplicates mean" in msg
    r = irtpeer.load_ratings(df, duplicates="mean")
    assert sorted(r.data["_weight"].tolist()) == [0.5, 0.5, 1.0, 1.0, 1.0]


def test_empty_inputs(tmp_path):
    with pytest.raises(RatingsError, match="has no rows"):
        irtpeer.load_ratings(table().iloc[:0])
    df = table()
    df["score"] = None
    with pytest.raises(RatingsError, match="all 4 scores in column 'score'"):
        irtpeer.load_ratings(df)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(RatingsError, match="could not read"):
        irtpeer.load_ratings(tmp_path / "empty.csv")
    with pytest.raises(RatingsError, match="ratings file not found"):
        irtpeer.load_ratings(tmp_path / "nope.parquet")
    (tmp_path / "r.xlsx").write_text("x")
    with pytest.raises(RatingsError, match="unknown ratings file type '.xlsx'"):
        irtpeer.load_ratings(tmp_path / "r.xlsx")


def test_empty_facet_cells_are_an_error():
    df = table()
    df.loc[2, "judge"] = None
    with pytest.raises(RatingsError, match="column 'judge' is empty in 1 of 4 rows \\(data row 3\\)"):
        irtpeer.load_ratings(df)


def test_unobserved_middle_category_is_reported():
    sim = irtpeer.simulate(models=4, questions=30, judges=2, dimensions="A", categories=4, seed=2)
    df = sim.ratings.dropna(subset=["score"])
    df = df.assign(score=df["score"].astype(int).replace({1: 0}) * 2)  # categories 0, 4, 6
    # most of 0..6 unobserved: an error in --scale auto unless the range is declared (issue 12)
    with pytest.raises(RatingsError, match="leave 4 of the 7 categories between 0 and 6"):
        irtpeer.calibrate(df)
    cal = irtpeer.calibrate(irtpeer.load_ratings(df, score_range=(0, 6)))
    assert any("categories 1, 2, 3, 5 between 0 and 6 are never observed" in n for n in cal.notes)
    assert list(cal.facet("threshold")["element"]) == ["4", "6"]


def test_the_callers_frame_is_not_modified():
    df = table()
    before = df.copy()
    irtpeer.load_ratings(df)
    pd.testing.assert_frame_equal(df, before)


def test_scores_labels_and_weights_are_held_compactly(tmp_path):
    """A few bytes per judgment: scores in the smallest integer type, no weight column unless
    judgments were averaged, parquet text labels as categorical codes, narrow design codes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from irtpeer._design import build_designs

    sim = irtpeer.simulate(models=4, questions=12, judges=3, dimensions=["A", "E"], seed=2).ratings
    sim["note"] = "free text"
    # written by Arrow itself (no pandas metadata): plain text columns in the file
    pq.write_table(pa.Table.from_pandas(sim, preserve_index=False).replace_schema_metadata(),
                   tmp_path / "r.parquet")
    r = irtpeer.load_ratings(tmp_path / "r.parquet")
    for col in ("model", "question", "judge", "item", "dimension"):
        assert isinstance(r.data[col].dtype, pd.CategoricalDtype), col
        assert r.data[col].cat.codes.dtype == np.int8
    assert not isinstance(r.data["note"].dtype, pd.CategoricalDtype)  # other columns as they were
    assert r.data["_score"].dtype == np.int8 and "_weight" not in r.data and r.weights() is None
    ref = irtpeer.load_ratings(sim)  # the same judgments from a DataFrame of strings
    assert r.dimensions == ref.dimensions == ["A", "E"]
    for d in r.dimensions:
        a, b = r.dimension_frame(d), ref.dimension_frame(d)
        assert a["model"].astype(str).tolist() == b["model"].astype(str).tolist()
        assert a["_score"].tolist() == b["_score"].tolist()
    design = build_designs(r, irtpeer.ModelSpec())[0]
    # the codes in their own narrow type (int8 here: every parameter position fits), no int32 copy
    assert all(c.dtype == np.int8 for c in design.data.idx) and design.data.x.dtype == np.int8
    assert design.data.w is None

    wide = table(6)
    wide["score"] = [0, 1000, 5, 7, 1000, 0]
    assert irtpeer.load_ratings(wide).data["_score"].dtype == np.int16
    dup = irtpeer.load_ratings(pd.concat([table(), table().iloc[:1]]), duplicates="mean")
    assert sorted(dup.weights().tolist()) == [0.5, 0.5, 1.0, 1.0, 1.0]


def test_one_score_column_and_design_codes_are_the_tables_own(tmp_path):
    """Issue 11 (memory): the loaded table holds one integer score column (``_score`` in place
    of the file's), and the design's codes and categories are views of the table's columns
    (no int32 copies), widened only where a facet's parameter positions would not fit."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from irtpeer._design import _index_types, build_designs
    from irtpeer.ratings import category_codes

    rng = np.random.default_rng(0)
    m, q = np.meshgrid(np.arange(40), np.arange(60), indexing="ij")
    m, q = m.ravel(), q.ravel()
    y = (rng.random(len(m)) < 1 / (1 + np.exp(-(m / 20 - q / 30)))).astype(np.int8)
    pq.write_table(pa.table({  # a leaderboard as parquet writes it: dictionary labels, int8 score
        "model": pa.DictionaryArray.from_arrays(pa.array(m.astype(np.int32)),
                                                pa.array([f"m{i}" for i in range(40)])),
        "question": pa.DictionaryArray.from_arrays(pa.array(q.astype(np.int32)),
                                                   pa.array([f"q{i}" for i in range(60)])),
        "score": pa.array(y)}), tmp_path / "lb.parquet")
    r = irtpeer.load_ratings(tmp_path / "lb.parquet", facets=["question"])
    assert list(r.data.columns) == ["model", "question", "_score"]
    assert r.data["_score"].dtype == np.int8 and (r.data["_score"].to_numpy() == y).all()
    d = build_designs(r, irtpeer.ModelSpec())[0].data
    assert [c.dtype for c in d.idx] == [np.int8, np.int8]  # 40 + 60 positions fit in int8
    assert np.shares_memory(d.idx[0], category_codes(r.data["model"]))
    assert np.shares_memory(d.idx[1], category_codes(r.data["question"]))
    assert np.shares_memory(d.x, r.data["_score"].to_numpy())
    # from a DataFrame: the caller's score column is left alone, the table gets _score only
    frame = pd.DataFrame({"model": m.astype(str), "question": q.astype(str), "rating": y})
    r2 = irtpeer.load_ratings(frame, facets="question", score="rating")
    assert "rating" in frame and list(r2.data.columns) == ["model", "question", "_score"]
    # offset + code past int8 (100 models, then questions at 100..199): widened, same codes
    codes = [np.arange(100, dtype=np.int8), np.arange(100, dtype=np.int8)]
    out = _index_types(codes, [100, 100], None, 2)
    assert out[0] is codes[0] and out[1].dtype == np.int16 and (out[1] == codes[1]).all()
    # partial credit: code x categories + category must fit as well (30 x 5 > 127)
    out = _index_types([np.arange(3, dtype=np.int8), np.arange(30, dtype=np.int8)], [3, 30], 1, 5)
    assert out[1].dtype == np.int16


def test_parquet_read_a_row_group_at_a_time_equals_arrows_own_read(tmp_path):
    """Issue 11 (ingest): a parquet file of several row groups is read into the final code
    arrays a row group at a time; the row groups' dictionaries differ and together outgrow
    int8 codes. Same table as pyarrow's whole-file read; a null score falls back to it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from irtpeer._io import _read_row_groups, read_table

    rng = np.random.default_rng(1)
    path, writer = tmp_path / "groups.parquet", None
    for g in range(3):
        ix = rng.integers(0, 101, 500).astype(np.int32)
        labels = pa.array([f"m{g}_{i}" for i in range(100)] + ["shared"])
        t = pa.table({"model": pa.DictionaryArray.from_arrays(pa.array(ix), labels),
                      "question": pa.array([f"q{i % 7}" for i in range(500)]),
                      "score": pa.array(rng.integers(0, 2, 500).astype(np.int8))})
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t)
    writer.close()
    got = read_table(path, categorical=["model", "question"])
    want = pq.read_table(path, read_dictionary=["question"]).to_pandas()
    assert _read_row_groups(pq.ParquetFile(path, read_dictionary=["question"])) is not None
    assert got["model"].cat.codes.dtype == np.int16 and got["question"].cat.codes.dtype == np.int8
    for c in ("model", "question"):
        assert list(got[c].cat.categories) == list(want[c].cat.categories)  # first appearance
        assert (got[c].array.codes == want[c].array.codes).all()
    assert got["score"].dtype == np.int8 and (got["score"] == want["score"]).all()
    r = irtpeer.load_ratings(path, facets=["question"], duplicates="keep")
    assert len(r) == 1500 and r.data["model"].astype(str).tolist() == want["model"].astype(str).tolist()
    frame = want.astype({"score": "float64"})
    frame.loc[7, "score"] = np.nan  # a null score: the whole-file read, then dropped as missing
    frame.to_parquet(tmp_path / "null.parquet", row_group_size=400)
    assert _read_row_groups(pq.ParquetFile(tmp_path / "null.parquet")) is None
    r = irtpeer.load_ratings(tmp_path / "null.parquet", facets=["question"], duplicates="keep")
    assert len(r) == 1499 and r.summary["null_scores"] == 1


@pytest.mark.parametrize("cells", [True, False])
def test_raw_and_z_columns_match_a_groupby(cells, monkeypatch):
    """raw_* = weighted mean score per model; z_* = weighted mean of the scores standardised
    within each judge (mean, SD with ddof 1), computed here with pandas groupby. Both ways of
    irtpeer: from (model, judge, score) cell counts, and judgment by judgment."""
    if not cells:
        monkeypatch.setattr("irtpeer._calibration._MAX_CELLS", 0)
    sim = irtpeer.simulate(models=5, questions=20, judges=3, dimensions=["E", "T", "A", "C"], categories=4,
                           seed=4).ratings
    df = pd.concat([sim, sim.iloc[:30]], ignore_index=True)  # 30 judgments given twice
    r = irtpeer.load_ratings(df, duplicates="mean")
    cal = irtpeer.TorchMFRM().fit(r).calibration_
    rows = df[df["score"].notna()].copy()
    key = ["model", "question", "judge", "item", "dimension"]
    rows["w"] = 1.0 / rows.groupby(key)["score"].transform("size")
    rows["s"] = rows["score"].astype(float)
    for d, sub in rows.groupby("dimension"):
        g = sub.groupby("judge")["s"]
        z = (sub["s"] - g.transform("mean")) / g.transform("std")
        raw = (sub["s"] * sub["w"]).groupby(sub["model"]).sum() / sub.groupby("model")["w"].sum()
        zm = (z * sub["w"]).groupby(sub["model"]).sum() / sub.groupby("model")["w"].sum()
        got = cal.scores.set_index("model")
        np.testing.assert_allclose(got[f"raw_{d}"].reindex(raw.index), raw, rtol=1e-12)
        np.testing.assert_allclose(got[f"z_{d}"].reindex(zm.index), zm, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cal.scores["z_peer"], (cal.scores["z_E"] + cal.scores["z_C"]) / 2)
