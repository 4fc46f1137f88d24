"""What a new user hit with `irtpeer score` (issue 12, items 1-5 and 18), run as they run it."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer.estimators._threads import SMALL_WORK, choose_threads


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "irtpeer", *map(str, args)], capture_output=True,
                          check=False, text=True, cwd=cwd, timeout=300, env=env)


@pytest.fixture(scope="module")
def example():
    return pd.read_parquet(irtpeer.example_path())


# ---------------------------------------------------------------- 1. threads by the size of work
def test_small_designs_fit_on_one_thread_and_threads_can_be_set(tmp_path):
    cal = irtpeer.calibrate(irtpeer.example_path())
    assert cal.options["threads"] == 1  # 51k observations: far below SMALL_WORK
    assert choose_threads(None, SMALL_WORK * 2) >= 1
    assert choose_threads(3, 10) == 3
    res = cli("score", "--example", "--threads", 2, "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["options"]["threads"] == 2
    res = cli("score", "--example", "--threads", 0)
    assert res.returncode == 2 and "threads must be a whole number >= 1, got 0" in res.stderr


def test_openmp_threads_wait_passively():
    code = "import os, irtpeer, torch; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, timeout=120)
    assert out.stdout.strip() == "PASSIVE"


# ---------------------------------------------------------------- 2. stray scores
@pytest.mark.parametrize("stray", [-1, 99])
def test_a_stray_score_is_an_error_naming_value_and_row(tmp_path, example, stray):
    bad = example.copy()
    bad.loc[16, "score"] = stray
    bad.to_parquet(tmp_path / "r.parquet")
    res = cli("score", tmp_path / "r.parquet")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"the score {stray} occurs in only 1 of" in res.stderr
    assert "data row 17" in res.stderr and "--score-range=MIN,MAX" in res.stderr
    # declaring the range keeps the value as a category, as asked
    # (the '=' form, as the message shows, also takes a negative MIN)
    res = cli("score", tmp_path / "r.parquet", f"--score-range={min(stray, 0)},{max(stray, 1)}",
              "--json")
    assert res.returncode == 0, res.stderr


def test_a_mostly_unobserved_range_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"model": np.repeat(["a", "b", "c"], 200),
                       "question": np.tile([f"q{i}" for i in range(200)], 3),
                       "score": rng.choice([0, 1, 9], size=600, p=[0.45, 0.45, 0.1])})
    df.to_csv(tmp_path / "r.csv", index=False)
    res = cli("score", tmp_path / "r.csv")
    assert res.returncode == 2
    assert "leave 7 of the 10 categories between 0 and 9 unobserved" in res.stderr


# ---------------------------------------------------------------- 3. names that look like NA
def test_csv_names_like_na_are_names(tmp_path, example):
    df = example.copy()
    names = {"model-1": "NA", "model-2": "null", "model-3": "None", "model-4": "nan"}
    df["model"] = df["model"].replace(names)
    df.to_csv(tmp_path / "r.csv", index=False)
    df.to_parquet(tmp_path / "r.parquet")
    a = irtpeer.calibrate(str(tmp_path / "r.csv"))
    b = irtpeer.calibrate(str(tmp_path / "r.parquet"))
    assert sorted(a.scores["model"]) == sorted(["NA", "null", "None", "nan", "model-5"])
    pd.testing.assert_frame_equal(a.scores, b.scores)
    # in the score column an R-style NA is still a missing judgment
    df["score"] = df["score"].astype("Int64").astype(str).replace("<NA>", "NA")
    df.to_csv(tmp_path / "r2.csv", index=False)
    c = irtpeer.load_ratings(tmp_path / "r2.csv")
    assert c.summary["null_scores"] == int(example["score"].isna().sum())


# ---------------------------------------------------------------- 4. a closed pipe loses nothing
def test_outputs_survive_a_closed_stdout(tmp_path):
    cmd = f"{sys.executable} -m irtpeer score --example --out {tmp_path / 'out'} | head -n 1"
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0 and res.stdout.startswith("irtpeer calibration of")
    for name in ["measures.csv", "scores.csv", "convergence.csv", "calibration.json"]:
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len(pd.read_csv(tmp_path / "out" / "scores.csv")) == 5


# ---------------------------------------------------------------- 5. screen output
def test_long_score_tables_are_cut_and_small_facets_shown(tmp_path):
    sim = irtpeer.simulate(models=30, questions=40, judges=3, dimensions=["X"], seed=1)
    sim.ratings.to_parquet(tmp_path / "r.parquet")
    res = cli("score", tmp_path / "r.parquet")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "... 10 more model rows (all 30 in scores.csv) ..." in out
    table = out.split("Scores (")[1].split("Facets (")[0]
    assert sum(line.strip().startswith("model-") for line in table.splitlines()) == 20
    # the judges are listed with their measures, harshest first
    judges = out.split("judge (logits; higher = harder / more severe)")[1].split("\n\n")[0]
    listed = [ln.split()[0] for ln in judges.strip().splitlines()[1:]]
    cal = irtpeer.calibrate(str(tmp_path / "r.parquet"))
    expect = cal.facet("judge").sort_values("measure", ascending=False)["element"].tolist()
    assert listed == expect


def test_disconnected_design_error_is_one_line(tmp_path):
    split = pd.DataFrame({"model": ["a", "a", "b", "b"], "question": ["q1", "q2", "q3", "q4"],
                          "score": [1, 0, 0, 1]})
    split.to_csv(tmp_path / "split.csv", index=False)
    res = cli("score", tmp_path / "split.csv")
    assert res.returncode == 2 and "disconnected into 2 subsets" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------- 18. documented options, run
def test_dimension_duplicates_score_range_and_progress_options(tmp_path, example):
    df = example.dropna(subset=["score"]).copy()
    df = df.rename(columns={"dimension": "trait"})
    dup = pd.concat([df, df.iloc[:50].assign(score=1 - df["score"].iloc[:50])])
    dup.to_csv(tmp_path / "dup.csv", index=False)
    res = cli("score", tmp_path / "dup.csv", "--dimension", "trait", "--duplicates", "mean",
              "--score-range", "0,1", "--progress", "--out", tmp_path / "o")
    assert res.returncode == 0, res.stderr
    assert "iteration 0 objective" in res.stderr  # --progress prints Newton iterations
    scores = pd.read_csv(tmp_path / "o" / "scores.csv")
    assert {"A", "T", "E", "C", "peer", "dignity"} <= set(scores.columns)
    meta = json.loads((tmp_path / "o" / "calibration.json").read_text())
    assert meta["data_summary"]["duplicated_rows"] == 100
    # 'mean' weighs each of a duplicated pair 1/2: the Python API gives the same measures
    r = irtpeer.load_ratings(dup, dimension="trait", duplicates="mean")
    cal = irtpeer.calibrate(r)
    np.testing.assert_allclose(scores.set_index("model").loc[cal.scores["model"], "A"],
                               cal.scores["A"], atol=1e-6)
    res = cli("score", tmp_path / "dup.csv", "--dimension", "trait", "--score-range", "0,0")
    assert res.returncode == 2 and "MIN must be below MAX" in res.stderr
    res = cli("score", tmp_path / "dup.csv", "--dimension", "none", "--duplicates", "keep",
              "--json")
    assert res.returncode == 0, res.stderr
    assert list(json.loads(res.stdout)["identification"]) == ["all"]


def test_estimator_options_go_only_to_their_estimator():
    res = cli("score", "--example", "--draws", 100)
    assert res.returncode == 2
    assert "--draws does not apply to --estimator torch" in res.stderr
    assert "--penalty" in res.stderr  # says what it does take
    res = cli("score", "--example", "--penalty", -1)
    assert res.returncode == 2 and "penalty must be a finite number >= 0" in res.stderr
    res = cli("score", "--example", "--person-mode", "hierarchical")
    assert res.returncode == 2 and "--estimator bayes" in res.stderr
