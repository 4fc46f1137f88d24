"""`irtpeer score --estimator bayes --method pathfinder`, run the way a user runs it (a subprocess).

Pathfinder (pymc-extras) is an approximate posterior: its means are compared with the exact torch
MLE on data with ample information per element (flat priors), and every output that carries the
method says APPROXIMATE, as for ADVI.
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import irtpeer
from irtpeer import ModelSpec, TorchMFRM

pytest.importorskip("pymc", reason="the 'bayes' extra (pymc, nutpie, arviz) is not installed")

ARGS = ["--estimator", "bayes", "--method", "pathfinder", "--person-prior", "flat", "--draws",
        "200", "--chains", "2", "--seed", "1"]


def _cli(*args, pre=""):
    code = f"import sys; {pre}from irtpeer.cli import main; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 4 models x 30 questions x 2 judges x 2 items on a 0..2 scale: 480 ratings, 120 per model
    sim = irtpeer.simulate(models=4, questions=30, judges=2, dimensions="A", items_per_dimension=2,
                           categories=3, missing=0.0, seed=2)
    path = tmp_path_factory.mktemp("pf") / "r.parquet"
    sim.ratings.to_parquet(path)
    return path


def test_pathfinder_is_close_to_the_mle_and_labelled_approximate(data, tmp_path):
    pytest.importorskip("pymc_extras", reason="pymc-extras (the 'bayes' extra) is not installed")
    out = tmp_path / "out"
    res = _cli("score", data, *ARGS, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "method 'pathfinder' is an APPROXIMATE posterior" in res.stdout
    assert "[A] method 'pathfinder' gives an APPROXIMATE posterior" in res.stderr
    for name in ("convergence.csv", "diagnostics.csv"):
        row = pd.read_csv(out / name).iloc[0]
        assert row["method"] == "pathfinder" and bool(row["approximate"]), name
        assert np.isnan(row["r_hat_max"])  # no chains, no R-hat
    cal = json.loads((out / "calibration.json").read_text())
    assert "APPROXIMATE" in json.dumps(cal)
    measures = pd.read_csv(out / "measures.csv")
    assert np.isfinite(measures["hdi_low"]).all() and (measures["se"] > 0).all()
    # the means: the exact MLE of the same model (flat priors, 120 ratings per model)
    mle = TorchMFRM(ModelSpec()).fit(irtpeer.load_ratings(data)).calibration_.facet("model")
    got = measures[measures["facet"] == "model"].set_index("element")["measure"]
    np.testing.assert_allclose(got.loc[mle["element"]], mle["measure"], atol=0.15)


def test_pathfinder_without_pymc_extras_is_one_line(data, tmp_path):
    res = _cli("score", data, *ARGS, "--out", tmp_path / "out",
               pre="sys.modules['pymc_extras'] = None; ")  # import pymc_extras now fails
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "pymc-extras" in lines[0] and "pip install 'irtpeer[bayes]'" in lines[0]
    assert not (tmp_path / "out").exists()
