"""The report in a real browser: headless Chromium (Debian's package, driven by Playwright).

Skipped only where no Chromium can be installed (scripts/test.sh apt-installs it when it can).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from report_browser import require_browser, visit
from report_support import XSS_ITEM, XSS_JUDGE, XSS_MODEL, figure_svgs, xss_report


def irtpeer_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``irtpeer ARGS`` as a user types it (the installed entry point's module)."""
    return subprocess.run([sys.executable, "-m", "irtpeer", *args], cwd=cwd, capture_output=True,
                          check=False,
                          text=True, timeout=300)


def assert_clean_visit(v, html: str) -> None:
    assert v.errors == [], v.errors
    assert [m for m in v.console if m.startswith(("error", "warning"))] == []
    assert v.requests == [], f"network requests: {v.requests}"
    assert v.dialogs == [] and v.scripts == 0
    assert len(v.figures) == len(figure_svgs(html)) > 0
    for f in v.figures:  # every figure decoded and laid out with a non-zero size
        assert f["complete"] and f["natural"] > 0 and f["width"] > 50 and f["height"] > 50, f


def test_example_report_in_chromium(tmp_path):
    require_browser()
    r = irtpeer_cli("report", "--example", "--out", "report.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Wrote report.html (")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    shot = tmp_path / "top.png"
    v = visit(tmp_path / "report.html", screenshot=shot)
    assert_clean_visit(v, html)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    for heading in ("Scores", "Wright map", "Measurement tables", "Run metadata"):
        assert heading in v.text
    # an open <details> shows the rest of a long table without any script
    assert "Show all 300 rows" in v.text


def test_script_in_a_model_name_is_shown_as_text():
    require_browser()
    out, _ = xss_report()
    v = visit(out)
    assert v.dialogs == [], "a script in a user string ran"
    assert v.scripts == 0
    assert v.requests == []  # the <img src=x> in a judge name was not an element
    for name in (XSS_MODEL, XSS_JUDGE, XSS_ITEM):
        assert name in v.text  # shown literally, as text


@pytest.mark.parametrize(
    "name,args,expect",
    [
        ("hanna", ["hanna_long.csv", "--score", "score_rounded"],
         ["Dimension Coherence", "Dimension Surprise", "Judge severity by dimension",
          "Category statistics", "ChatGPT_p1", "Human_3"]),
        ("guilford", ["guilford_ratings_long.csv", "--config", "guilford.toml"],
         ["Dimension all", "Facet senior_label", "Rating scale", "Category statistics",
          "Cavendish", "Betty"]),
    ],
)
def test_real_data_of_other_shapes(shared_data, tmp_path, name, args, expect):
    require_browser()
    (tmp_path / "guilford.toml").write_text(
        'person = "junior_label"\nfacets = ["senior_label", "trait_id"]\nscore = "rating"\n'
        'dimension = "none"\n')
    for f in ("hanna_long.csv", "guilford_ratings_long.csv"):
        (tmp_path / f).symlink_to(shared_data / f)
    r = irtpeer_cli("report", *args, "--out", f"{name}.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / f"{name}.html").read_text(encoding="utf-8")
    v = visit(tmp_path / f"{name}.html")
    assert_clean_visit(v, html)
    for text in expect:
        assert text in v.text, text
    assert "Could not be computed" not in v.text
