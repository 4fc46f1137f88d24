"""The `irtpeer` command line, run the way a user runs it (a subprocess)."""

import json
import subprocess
import sys

import pandas as pd
import pytest

import irtpeer

MEASURE_COLUMNS = ["dimension", "facet", "element", "measure", "se", "se_model", "count"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irtpeer", *map(str, args)], capture_output=True, check=False,
                          text=True, cwd=cwd, timeout=300)


def test_score_example_prints_table_and_writes_files(tmp_path):
    res = cli("score", "--example", "--out", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    assert "Scores (logits; higher = better" in res.stdout and "peer" in res.stdout
    measures = pd.read_csv(tmp_path / "out" / "measures.csv")
    assert list(measures.columns[: len(MEASURE_COLUMNS)]) == MEASURE_COLUMNS
    assert set(measures["facet"]) == {"model", "question", "judge", "item"}
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    for col in ["model", "A", "A_se", "T", "E", "C", "peer", "peer_se", "dignity", "dignity_se",
                "raw_peer", "raw_dignity", "z_peer", "z_dignity"]:
        assert col in scores.columns
    assert len(scores) == 5
    # the calibration recovers the simulated truth of the example
    truth = pd.read_csv(irtpeer.example_path().replace("example_ratings.parquet", "example_truth.csv"))
    m = measures.merge(truth, on=["dimension", "facet", "element"], suffixes=("", "_true"))
    for facet in ["model", "judge", "item"]:
        sub = m[m["facet"] == facet]
        assert sub[["measure", "measure_true"]].corr().iloc[0, 1] > 0.9
    # peer = mean(E, C) with SE from the covariance of independent dimensions
    row = scores.iloc[0]
    assert row["peer"] == pytest.approx((row["E"] + row["C"]) / 2)
    assert row["peer_se"] == pytest.approx(((row["E_se"] ** 2 + row["C_se"] ** 2) ** 0.5) / 2)
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary files left behind


def test_score_json_and_column_mapping(tmp_path, shared_data):
    res = cli("score", shared_data / "guilford_ratings_long.csv", "--person", "junior_label",
              "--facets", "senior_label,trait_id", "--score", "rating", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["person"] == "junior_label" and out["meta"]["scales"]["all"] == "rsm"
    facets = {m["facet"] for m in out["measures"]}
    assert facets == {"junior_label", "senior_label", "trait_id", "threshold"}
    assert out["convergence"][0]["converged"] is True


def test_simulate_then_score_with_options(tmp_path):
    res = cli("simulate", "--out", tmp_path / "sim", "--models", 4, "--questions", 20,
              "--judges", 2, "--dimensions", "X,Y", "--categories", 4, "--seed", 3)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sim" / "ratings.parquet").exists() and (tmp_path / "sim" / "truth.csv").exists()
    res = cli("score", tmp_path / "sim" / "ratings.parquet", "--scale", "pcm:item",
              "--device", "cpu", "--out", tmp_path / "fit")
    assert res.returncode == 0, res.stderr
    m = pd.read_csv(tmp_path / "fit" / "measures.csv")
    assert (m["facet"] == "threshold").sum() == 2 * 3 * 3  # 2 dims x 3 items x 3 steps
    res = cli("score", tmp_path / "sim" / "ratings.parquet", "--person-mode", "response",
              "--penalty", "0.5", "--out", tmp_path / "resp")
    assert res.returncode == 0, res.stderr
    m = pd.read_csv(tmp_path / "resp" / "measures.csv")
    assert (m["facet"] == "response").sum() == 2 * 4 * 20


def test_bundled_example_is_reproducible(tmp_path):
    # provenance of irtpeer/data/example_ratings.parquet (see irtpeer/data/README.md)
    res = cli("simulate", "--models", 5, "--questions", 300, "--judges", 3, "--missing", 0.05,
              "--seed", 2026, "--out", tmp_path)
    assert res.returncode == 0, res.stderr
    a = pd.read_parquet(tmp_path / "ratings.parquet")
    b = pd.read_parquet(irtpeer.example_path())
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize(
    "args, message",
    [
        (["score"], "give a ratings PATH"),
        (["score", "missing.parquet"], "ratings file not found: 'missing.parquet'"),
        (["score", "bad.csv"], "column 'score' has 1 non-integer score(s) (0.5)"),
        (["score", "bad.csv", "--score", "grade"], "column 'grade' not found"),
        (["score", "dup.csv"], "duplicated judgments"),
        (["score", "split.csv"], "disconnected"),
        (["score", "ok.csv", "--scale", "likert"], "scale='likert' is not one of"),
        (["score", "ok.csv", "--person-mode", "response", "--penalty", "0"], "not identified"),
        (["score", "ok.csv", "--device", "tpu"], "device 'tpu' is not one of"),
        (["score", "ok.csv", "--estimator", "stan"], "unknown estimator 'stan'"),
    ],
)
def test_user_errors_are_one_clear_line_without_traceback(tmp_path, args, message):
    ok = pd.DataFrame({"model": ["a", "b", "a", "b"], "question": ["q1", "q1", "q2", "q2"],
                       "score": [1, 0, 0, 1]})
    ok.to_csv(tmp_path / "ok.csv", index=False)
    ok.assign(score=[1, 0.5, 0, 1]).to_csv(tmp_path / "bad.csv", index=False)
    pd.concat([ok, ok.iloc[:1]]).to_csv(tmp_path / "dup.csv", index=False)
    split = pd.DataFrame({"model": ["a", "a", "b", "b"], "question": ["q1", "q2", "q3", "q4"],
                          "score": [1, 0, 0, 1]})
    split.to_csv(tmp_path / "split.csv", index=False)
    res = cli(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert message in res.stderr, res.stderr
    assert res.stderr.startswith("irtpeer: error:")


def test_out_that_is_a_file_is_refused_and_untouched(tmp_path):
    target = tmp_path / "results"
    target.write_text("keep me")
    res = cli("score", "--example", "--out", target)
    assert res.returncode == 2 and "is not a folder" in res.stderr
    assert target.read_text() == "keep me"


def test_console_script_is_installed():
    res = subprocess.run(["irtpeer", "--version"], capture_output=True, text=True, check=False)
    assert res.returncode == 0 and res.stdout.startswith("irtpeer ")


def test_large_file_loads_beside_the_estimator_import(tmp_path):
    """From 4 MB of parquet the estimator is imported in a thread while the file is read: a
    wrong column found on reading is still one line with exit code 2 (the process waits for the
    import and exits cleanly), and the same file calibrates."""
    import numpy as np

    from irtpeer.cli._common import PRELOAD_BYTES

    rng = np.random.default_rng(1)
    m, q = (a.ravel() for a in np.meshgrid(np.arange(30), np.arange(2000), indexing="ij"))
    df = pd.DataFrame({"model": [f"m{i}" for i in m], "question": [f"q{i}" for i in q],
                       "score": (rng.random(len(m)) < 1 / (1 + np.exp(-(m - 15) / 10))).astype(int)})
    for k in range(10):  # incompressible extra columns make the file large
        df[f"x{k}"] = rng.random(len(df))
    df.to_parquet(tmp_path / "big.parquet", index=False)
    assert (tmp_path / "big.parquet").stat().st_size >= PRELOAD_BYTES
    res = cli("score", "big.parquet", "--person", "nosuch", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("irtpeer: error: column 'nosuch'")
    assert "Traceback" not in res.stderr
    res = cli("score", "big.parquet", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert len(scores) == 30 and scores["all"].notna().all()
    top = scores.sort_values("all")["model"].iloc[-5:].str[1:].astype(int)
    assert (top >= 15).all()  # the simulated ability grows with the model number


def test_a_reader_that_goes_away_does_not_cut_the_work_short(tmp_path):
    """`irtpeer score ... --progress 2>&1 | head -1`: the first progress line reaches the reader,
    which then exits. The fit still finishes and writes every file, exit status 0 (before, the
    next progress line raised BrokenPipeError: status 0 and no files at all)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "irtpeer", "score", "--example", "--out", str(out), "--progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away, as `head -1` does
    assert proc.wait(timeout=300) == 0
    assert first.strip()
    for name in ("measures.csv", "scores.csv", "convergence.csv"):
        assert len(pd.read_csv(out / name)) > 0, name
    assert json.loads((out / "calibration.json").read_text())
