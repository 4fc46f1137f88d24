"""`irtpeer bias | equate | compare | judges` run as a user types them (subprocesses, real
parquet/CSV files), their one-line errors, --json, --config and the progress bar."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from analyses_sim import crossed

import irtpeer


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irtpeer", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, check=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    sim = irtpeer.simulate(models=4, questions=20, judges=3, dimensions="A,T,E,C",
                           items_per_dimension=2, seed=7)
    sim.ratings.to_parquet(d / "ratings.parquet", index=False)
    return d


def test_bias_writes_table_13(data):
    res = cli("bias", data / "ratings.parquet", "--facets", "judge,model", "--out", data / "bias")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(data / "bias" / "bias.csv")
    assert list(table.columns[:11]) == ["dimension", "facet_a", "element_a", "facet_b",
                                        "element_b", "count", "bias", "se", "t", "df", "p_value"]
    assert len(table) == 4 * 3 * 4
    assert (data / "bias" / "bias_contrasts.csv").exists()
    assert "bias:" in res.stdout and "Wrote" in res.stdout


def test_compare_friedman_json_matches_files(data):
    res = cli("compare", data / "ratings.parquet", "--friedman", "--out", data / "cmp", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    fr = pd.read_csv(data / "cmp" / "friedman.csv")
    assert list(fr.columns[:8]) == ["method", "target", "statistic", "df", "p_value",
                                    "kendall_w", "n_blocks", "n_models"]
    assert set(fr["method"]) == {"raw", "zscore", "mfrm"}
    assert set(fr["target"]) == {"A", "T", "E", "C", "peer", "dignity"}
    assert len(doc["friedman"]) == len(fr)
    assert doc["friedman"][0]["statistic"] == pytest.approx(fr["statistic"].iloc[0])
    for name in ["comparison", "rankings", "posthoc"]:
        assert (data / "cmp" / f"{name}.csv").exists()
    # without --friedman: the comparison only
    res = cli("compare", data / "ratings.parquet", "--out", data / "cmp2")
    assert res.returncode == 0 and not (data / "cmp2" / "friedman.csv").exists()


def test_equate_with_config_file(data):
    (data / "eq.toml").write_text('boot = 200\nseed = 3\ntolerance = 0.2\n')
    res = cli("equate", data / "ratings.parquet", "--config", data / "eq.toml", "--out",
              data / "eq")
    assert res.returncode == 0, res.stderr
    eq = pd.read_csv(data / "eq" / "equating.csv")
    assert list(eq.columns[:9]) == ["dim_a", "dim_b", "shift", "slope", "slope_lo", "slope_hi",
                                    "correlation", "share_within_bands", "verdict"]
    assert len(eq) == 6 and set(eq["verdict"]) <= {"comparable", "needs linking"}
    linked = pd.read_csv(data / "eq" / "linked_scores.csv")
    assert {"peer", "peer_linked", "dignity", "dignity_linked"} <= set(linked.columns)


def test_judges_progress_bar_and_table(tmp_path):
    rng = np.random.default_rng(0)
    frame = crossed(rng.normal(0, 0.5, 4), rng.normal(0, 0.8, 15), np.array([-1, -0.3, 0.4, 0.9]),
                    np.array([-0.2, 0.2]), seed=2)
    frame.to_csv(tmp_path / "r.csv", index=False)
    res = cli("judges", tmp_path / "r.csv", "--out", tmp_path / "out", "--progress")
    assert res.returncode == 0, res.stderr
    assert "refitting judge subsets" in res.stderr and "14/14" in res.stderr
    jc = pd.read_csv(tmp_path / "out" / "judge_count.csv")
    assert list(jc.columns[1:8]) == ["k", "subsets", "tau_models_mean", "tau_models_min",
                                     "spearman_models_mean", "mean_se", "max_shift"]
    assert jc["k"].tolist() == [1, 2, 3, 4] and jc["subsets"].tolist() == [4, 6, 4, 1]
    assert (tmp_path / "out" / "judge_loo.csv").exists() and (tmp_path / "out" / "d_study.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["bias", "{p}", "--facets", "judge,rater"], "bias facet 'rater' is not a column"),
    (["bias", "{p}", "--facets", "judge,dimension"], "is the dimension column"),
    (["bias", "{p}", "--model-facets", "question,jdg"], "'jdg'"),
    (["compare", "{p}", "--friedman", "--blocks", "prompt"], "'prompt'"),
    (["equate", "{p}", "--boot", "5"], "--boot 5"),
    (["equate", "{p}", "--dimension", "none"], "at least two dimensions"),
    (["judges", "{p}", "--judge", "grader"], "judge facet 'grader'"),
    (["compare", "{d}/missing.parquet"], "not found"),
    (["compare", "{p}", "--config", "{d}/bad.toml"], "unknown option 'bootstrap'"),
])
def test_bad_input_is_one_line(data, args, message):
    (data / "bad.toml").write_text("bootstrap = 3\n")
    res = cli(*[a.format(p=data / "ratings.parquet", d=data) for a in args])
    assert res.returncode == 2, res.stdout
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_output_piped_into_head(data):
    proc = subprocess.run(f"{sys.executable} -m irtpeer bias {data / 'ratings.parquet'} | head -3",
                          shell=True, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 3
    assert "Traceback" not in proc.stderr
