"""``irtpeer report`` errors as a user meets them: one line, no traceback, no file written."""

from __future__ import annotations

import subprocess
import sys


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "irtpeer", "report", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "r.csv").write_text("model,question,judge,item,score\nm1,q1,j1,i1,x\n")
    cases = [
        (["missing.csv"], "ratings file not found: 'missing.csv'"),
        (["r.csv"], "'score'"),
        (["r.csv", "--score", "nope"], "column 'nope' not found"),
        (["--example", "--out", "."], "is a folder; give the path of an .html file"),
        (["--example", "--config", "none.toml"], "--config file not found"),
    ]
    for args, expect in cases:
        r = run(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("irtpeer: error: "), r.stderr
        assert expect in lines[0], (expect, lines[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_help_lists_the_report_options(tmp_path):
    r = run("--help", cwd=tmp_path)
    assert r.returncode == 0
    for flag in ("--out FILE", "--config FILE", "--no-analyses", "--max-refits", "--estimator"):
        assert flag in r.stdout
