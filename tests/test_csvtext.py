"""csv_text writes exactly the text of pandas' ``to_csv(index=False)`` (the reference), faster.

The float cells are the risky part: they are cast by pyarrow and laid out like numpy's
``astype(str)`` (which pandas uses); random doubles of every magnitude and random bit patterns
must come out character for character as pandas writes them.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from irtpeer._csvtext import _floats, csv_text


def test_float_cells_equal_numpy_str_over_all_magnitudes():
    rng = np.random.default_rng(0)
    with np.errstate(over="ignore"):  # the largest magnitudes overflow to inf: also written
        parts = [rng.standard_normal(2_000) * 10.0**e for e in range(-310, 310, 3)]
    bits = rng.integers(0, 2**64, 50_000, dtype=np.uint64).view(np.float64)
    v = np.concatenate(parts + [bits])
    v = v[~np.isnan(v)]
    with np.errstate(over="ignore", invalid="ignore"):
        v[::5] = np.round(v[::5], 4)  # short decimals and whole numbers
        v[1::7] = np.round(v[1::7])
    edge = [0.0, -0.0, np.inf, -np.inf, 1e-4, 9.99999e-5, 1e15, 1e16, 9999999999999998.0,
            5e-324, 2.0**53, 0.1, 1 / 3, 1.7976931348623157e308]
    v = np.concatenate([v, edge])
    want = v.astype(str).tolist()
    got = _floats(v)
    diff = [(w, g) for w, g in zip(want, got) if w != g]
    assert not diff, diff[:5]
    assert _floats(np.array([np.nan, 1.0])) == ["", "1.0"]


FRAMES = {
    "measures": lambda: pd.DataFrame({
        "dimension": ["all"] * 4, "facet": ["model", "model", "judge", "judge"],
        "element": pd.array(["m0", "m1", "j0", None], dtype="str"),
        "measure": [0.16173742441313663, -1e-6, 3.0, np.nan], "count": [750000.0, 2.0, 0.0, 1e20],
        "status": ["", "extreme_max", "", ""]}),
    "quoting": lambda: pd.DataFrame({
        "a": ["x,y", 'q"t', "line\nbreak", None, "", "cr\r"], "b": [1.5, np.nan, -0.0, np.inf, 1e-7, 3.0],
        "c": [True, False, True, True, False, False], "d": np.arange(6, dtype=np.int8)}),
    "object_text_with_missing": lambda: pd.DataFrame({"a": ["x", np.nan, None], "b": [1, 2, 3]}),
    "one_text_column": lambda: pd.DataFrame({"a": ["", "x", None]}),
    "one_float_column": lambda: pd.DataFrame({"a": [np.nan, 1.0, 2.5]}),
    "no_rows": lambda: pd.DataFrame({"a": pd.Series([], dtype=float), "b": pd.Series([], dtype=str)}),
    "header_with_comma": lambda: pd.DataFrame({"a,b": [1.0], "c": ["z"]}),
    "uint64": lambda: pd.DataFrame({"a": np.array([2**63 + 5], dtype=np.uint64), "b": ["s"]}),
    # handed to pandas as they are
    "categorical": lambda: pd.DataFrame({"a": pd.Categorical(["x", "y"]), "b": [1.0, 2.0]}),
    "float32": lambda: pd.DataFrame({"a": np.array([0.1, 0.2], dtype=np.float32)}),
    "nullable_int": lambda: pd.DataFrame({"a": pd.array([1, None], dtype="Int64"), "b": [0.5, 0.25]}),
    "numbered_columns": lambda: pd.DataFrame({0: [1.0], 1: [2.0]}),
    "object_mixed": lambda: pd.DataFrame({"a": ["x", 1.5], "b": [1, 2]}),
}


@pytest.mark.parametrize("name", list(FRAMES))
def test_csv_text_equals_pandas_to_csv(name):
    df = FRAMES[name]()
    assert csv_text(df) == df.to_csv(index=False)


def test_calibration_files_are_the_tables_as_pandas_writes_them(tmp_path):
    """The files `irtpeer score --out` writes (Calibration.to_csv) hold the text pandas would
    write for the same tables, character for character; the CLI writes the same files."""
    import irtpeer

    sim = irtpeer.simulate(models=5, questions=30, judges=3, dimensions="EA",
                           items_per_dimension=2, categories=3, seed=3)
    cal = irtpeer.TorchMFRM().fit(irtpeer.load_ratings(sim.ratings)).calibration_
    paths = cal.to_csv(tmp_path / "lib")
    for name in ("measures", "scores", "convergence"):
        table = getattr(cal, name)
        assert paths[name].read_text() == table.to_csv(index=False)
    data = tmp_path / "ratings.parquet"
    sim.ratings.to_parquet(data, index=False)
    out = tmp_path / "cli"
    res = subprocess.run([sys.executable, "-m", "irtpeer", "score", str(data), "--fit", "off",
                          "--out", str(out)], capture_output=True, text=True, check=False,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert (out / "measures.csv").read_text() == paths["measures"].read_text()
    assert (out / "scores.csv").read_text() == paths["scores"].read_text()
