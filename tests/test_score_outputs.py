"""What `irtpeer score` adds from the analyses: fit columns, question-clustered SEs, the report."""

import subprocess
import sys

import numpy as np
import pandas as pd

import irtpeer
from irtpeer.analyses import fit_statistics, question_uncertainty


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irtpeer", *map(str, args)], capture_output=True,
                          check=False, text=True, cwd=cwd, timeout=600)


def test_score_writes_fit_columns_question_ses_and_report_from_a_config_file(tmp_path):
    # settings from a TOML file, one flag on the command line
    (tmp_path / "score.toml").write_text('se = "questions"\nreport = "rep/report.html"\n')
    res = cli("score", "--example", "--config", "score.toml", "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "peer_se_q" in res.stdout

    r = irtpeer.load_ratings(irtpeer.example_path())
    cal = irtpeer.calibrate(r)
    # measures.csv: the analyses' fit statistics beside every measure
    measures = pd.read_csv(tmp_path / "out" / "measures.csv", keep_default_na=False,
                           na_values=[""])
    fit = fit_statistics(cal, r)
    for col in ["infit", "outfit", "infit_z", "outfit_z"]:
        np.testing.assert_allclose(measures[col].to_numpy(float), fit[col].to_numpy(float),
                                   rtol=1e-9, equal_nan=True)
    # scores.csv: conditional and question-clustered SEs side by side
    scores = pd.read_csv(tmp_path / "out" / "scores.csv").set_index("model")
    q = question_uncertainty(cal, r).se.set_index("model")
    for col in ["A_se_q", "peer_se_q", "dignity_se_q"]:
        np.testing.assert_allclose(scores.loc[q.index, col], q[col], rtol=1e-9)
    assert (scores["peer_se_q"] > scores["peer_se"]).all()  # prompts like these, not only these
    # the report, with the fit columns rendered once (not doubled by the merge)
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("infit MnSq") >= 4 and "model-3" in html


def test_bad_se_option_is_one_line(tmp_path):
    (tmp_path / "bad.toml").write_text('se = "robust"\n')
    res = cli("score", "--example", "--config", "bad.toml", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "option 'se' is 'robust'; choose one of conditional, questions" in res.stderr


def test_fit_statistics_are_skipped_above_the_auto_limit_with_a_note(tmp_path, monkeypatch, capsys):
    from irtpeer.cli import main, score

    monkeypatch.setattr(score, "FIT_AUTO_LIMIT", 1000)  # the example has 51,236 judgments
    assert main(["score", "--example", "--out", str(tmp_path / "auto")]) == 0
    assert "fit statistics were not computed for 51,236 judgments" in capsys.readouterr().out
    assert "infit" not in pd.read_csv(tmp_path / "auto" / "measures.csv").columns
    assert main(["score", "--example", "--fit", "on", "--out", str(tmp_path / "on")]) == 0
    assert "infit" in pd.read_csv(tmp_path / "on" / "measures.csv").columns
