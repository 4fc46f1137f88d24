"""The HTML report as a library: contents, numbers, escaping, failures shown as notes."""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from report_support import figure_svgs, simulated, xss_report
from scipy.stats import norm

from irtpeer.report import (
    _analyses,
    _figures,
    _measures,
    _render,
    _sections,
    render_report,
    write_report,
)


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    path = tmp_path_factory.mktemp("binary") / "ratings.parquet"
    ratings, cal = simulated(path=path)
    return ratings, cal, path


@pytest.fixture(scope="module")
def binary_html(binary, tmp_path_factory):
    ratings, cal, _ = binary
    out = write_report(cal, ratings, tmp_path_factory.mktemp("out") / "r.html")
    return out.read_text(encoding="utf-8")


def test_report_has_every_section_and_valid_figures(binary_html):
    html = binary_html
    for sid in ("scores", "wright", "plot-judge", "plot-item", "plot-question", "measures",
                "bias", "equating", "stability", "judges", "convergence", "metadata"):
        assert f'<section id="{sid}">' in html, sid
    assert '<section id="categories">' not in html and '<section id="bayes">' not in html
    assert "Could not be computed" not in html and "Not available" not in html
    svgs = figure_svgs(html)
    # scores + rank heatmap per composite (2 x 2), 4 Wright maps, judge, item, question plots,
    # bias, equating, stability, judge count
    assert len(svgs) == 4 + 4 + 3 + 4
    for svg in svgs:
        assert ET.fromstring(svg).tag.endswith("svg")
    # self-contained: no script, no external reference, one inline style sheet
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', html)
    assert "Content-Security-Policy" in html
    assert html.count("<style>") == 1
    style = html[html.index("<style>"):html.index("</style>")]
    assert '"DejaVu Sans"' in style and "&#34;" not in style  # CSS inline as written


def test_headline_numbers_are_the_calibration(binary, binary_html):
    _ratings, cal, _ = binary
    html = binary_html
    sc = cal.scores.set_index("model")
    for model in sc.index:
        for metric in ("peer", "dignity"):
            value = f"{sc.loc[model, metric]:.3f}".replace("-", "−")
            row = f"<td>{model}</td><td class=\"num\">{value}"
            assert row in html, (model, metric)


def test_metadata_has_input_sha256_and_counts(binary, binary_html):
    _ratings, cal, path = binary
    html = binary_html
    assert hashlib.sha256(path.read_bytes()).hexdigest() in html
    assert f"<td>{cal.data_summary['rows_used']}</td>" in html
    assert f"<td>{cal.data_summary['null_scores']}</td>" in html


def _tables(section):
    return [b["table"] for b in section.blocks if b["kind"] == "table"]


def test_misfit_rows_are_highlighted_and_named(binary, monkeypatch):
    ratings, cal, _ = binary
    from irtpeer import analyses

    real = analyses.fit_statistics

    def one_underfit(cal, ratings):
        fit = real(cal, ratings)
        i = fit.index[(fit.facet == "judge") & (fit.dimension == "A")][0]
        fit.loc[i, ["infit", "infit_z", "fit_flag"]] = [2.5, 4.0, "underfit"]
        return fit

    monkeypatch.setattr(analyses, "fit_statistics", one_underfit)
    (sec,) = _measures.measurement_tables(cal, ratings)
    judge_a = next(t for t in _tables(sec) if t["caption"].startswith("judge"))  # A comes first
    flagged = [r for r in judge_a["rows"] if r["cls"]]
    assert len(flagged) == 1 and flagged[0]["cls"] == "misfit under"
    assert "underfit" in flagged[0]["cells"]
    assert judge_a["caption"] == "judge (3 elements, 1 misfitting)"
    # the Table 7 footer follows each dimension's tables
    assert sum(t["caption"].startswith("Facet summary") for t in _tables(sec)) == 4


def test_failing_analysis_and_sections_become_notes(binary, monkeypatch):
    ratings, cal, _ = binary
    from irtpeer import analyses

    def boom(*a, **k):
        raise ValueError("boom on this data")

    monkeypatch.setattr(analyses, "fit_statistics", boom)
    for name in ("headline", "wright", "facet_plots", "category_section"):
        monkeypatch.setattr(_sections, name, boom)
    html = render_report(cal, ratings, max_refits=0)
    assert "Fit statistics not available (ValueError: boom on this data)." in html
    assert html.count("Could not be computed on this data (ValueError: boom on this data).") == 4
    assert '<section id="measures">' in html and '<section id="metadata">' in html


def test_long_tables_collapse_to_the_extremes():
    ratings, cal = simulated(questions=60, seed=2)
    (sec,) = _measures.measurement_tables(cal, ratings, head=5, limit=1000)
    q = next(t for t in _tables(sec) if t["caption"].startswith("question"))
    assert len(q["rows"]) == 11 and q["rows"][5]["cells"] == ["… 50 rows between …"]
    assert q["more"]["label"] == "Show all 60 rows" and len(q["more"]["rows"]) == 60
    measures = [float(r["cells"][1].replace("−", "-")) for r in q["more"]["rows"]]
    assert measures == sorted(measures, reverse=True)
    (sec,) = _measures.measurement_tables(cal, ratings, head=5, limit=40)
    q = next(t for t in _tables(sec) if t["caption"].startswith("question"))
    assert q["more"] is None and q["note"].startswith("60 rows: only the extremes are shown")


def test_user_strings_are_escaped():
    _, html = xss_report()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&#34;quoted&#39; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script" not in html and "<img src=x" not in html and "<b>bold" not in html


def test_rating_scale_sections():
    ratings, cal = simulated(categories=4, seed=3)
    (curves,) = _sections.category_section(cal)
    assert [b["kind"] for b in curves.blocks] == ["figure"]
    (stats,) = _analyses.category_statistics_section(cal, ratings)
    tables = _tables(stats)
    assert [t["caption"] for t in tables] == ["Dimension A", "Dimension C", "Dimension E",
                                              "Dimension T"]
    assert [r["cells"][0] for r in tables[0]["rows"]] == ["0", "1", "2", "3"]
    # partial credit: one panel of curves per item, thresholds ITEM:CATEGORY
    import irtpeer

    pcm = irtpeer.TorchMFRM(irtpeer.ModelSpec(scale="pcm:item")).fit(ratings).calibration_
    panels = [p for d in pcm.dimensions for p in _sections.thresholds(pcm, d)]
    assert [name for name, _, _ in panels[:2]] == ["A: A1", "A: A2"] and len(panels) == 8
    assert all(len(tau) == 3 for _, tau, _ in panels)
    # binary data has no rating-scale sections
    _, bcal = simulated(seed=4, questions=10)
    assert _sections.category_section(bcal) is None


def test_atomic_write_keeps_the_old_file_on_failure(binary, tmp_path, monkeypatch):
    ratings, cal, _ = binary
    out = tmp_path / "r.html"
    out.write_text("old report")

    def broken(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(_render, "render_report", broken)
    with pytest.raises(RuntimeError):
        write_report(cal, ratings, out)
    assert out.read_text() == "old report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_category_probabilities_cross_at_the_thresholds():
    # Andrich model: adjacent categories k-1 and k are equally probable where x = tau_k
    # (definition of the adjacent-category logit), and probabilities sum to 1.
    tau = np.array([-1.3, 0.2, 1.7])
    p = _figures.category_probabilities(tau, tau)
    for k in range(1, 4):
        assert p[k - 1, k - 1] == pytest.approx(p[k - 1, k], rel=1e-12)
    assert p.sum(axis=1) == pytest.approx(np.ones(3))
    # binary: P(1) is the logistic function (scipy-free reference: 1 / (1 + e^-x))
    x = np.linspace(-4, 4, 9)
    assert _figures.category_probabilities(x, np.zeros(1))[:, 1] == pytest.approx(
        1 / (1 + np.exp(-x)))


def test_rank_probabilities_match_the_normal_reference():
    # Two models: P(A ranked first) = Phi((mu_A - mu_B) / sd(A - B)) under the normal
    # approximation (reference: scipy.stats.norm).
    mu = {"A": 0.30, "B": 0.10}
    cov = pd.DataFrame([[0.04, 0.01], [0.01, 0.09]], index=["A", "B"], columns=["A", "B"])
    cal = SimpleNamespace(person="model", draws=None, cov={"peer": cov},
                          scores=pd.DataFrame({"model": ["A", "B"], "peer": [mu["A"], mu["B"]]}))
    prob, summary, source = _sections.rank_probabilities(cal, "peer", draws=200_000, seed=0)
    expected = norm.cdf((mu["A"] - mu["B"]) / np.sqrt(0.04 + 0.09 - 2 * 0.01))
    assert prob.loc["A", 1] == pytest.approx(expected, abs=0.005)
    assert prob.sum(axis=1).to_numpy() == pytest.approx([1.0, 1.0])
    assert summary.loc["A", "expected_rank"] == pytest.approx(2 - expected, abs=0.005)
    assert "normal approximation" in source
    # with posterior draws, the draws are used as they are
    draws = pd.DataFrame({"A": [1.0, 0.0, 1.0, 1.0], "B": [0.0, 1.0, 0.0, 0.0]})
    cal.draws = {"peer": draws}
    prob, _, source = _sections.rank_probabilities(cal, "peer")
    assert prob.loc["A", 1] == 0.75 and source == "4 posterior draws"


def test_wright_map_labels_stay_apart_and_inside():
    y = np.array([0.0, 0.01, 0.02, 0.03, 2.0, 1.99])
    pos = _figures._spread(y, 0.1, -0.05, 2.0)
    assert np.all(np.diff(np.sort(pos)) >= 0.1 - 1e-12)
    assert pos.min() >= -0.05 and pos.max() <= 2.0
    assert list(np.argsort(pos, kind="stable")) == list(np.argsort(y, kind="stable"))


def test_posthoc_wilcoxon_holm_matches_pingouin_and_statsmodels():
    # reference: pingouin 0.7 pairwise_tests(parametric=False, padjust="holm") (paired
    # Wilcoxon, Holm) and statsmodels multipletests(method="holm")
    import pingouin as pg  # a dependency of irtpeer itself
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(5)
    wide = pd.DataFrame(rng.normal(size=(80, 4)) + [0.0, 0.1, 0.4, 0.45],
                        columns=["m1", "m2", "m3", "m4"])
    ours = _analyses.wilcoxon_holm(wide)
    long = wide.rename_axis("block").reset_index().melt(id_vars="block", var_name="model")
    ref = pg.pairwise_tests(data=long, dv="value", within="model", subject="block",
                            parametric=False, padjust="holm")
    assert list(ours["model_a"]) == list(ref["A"]) and list(ours["model_b"]) == list(ref["B"])
    assert ours["statistic"].to_numpy() == pytest.approx(ref["W_val"].to_numpy())
    assert ours["p_value"].to_numpy() == pytest.approx(ref["p_unc"].to_numpy(), rel=0.01)
    p = ours["p_value"].to_numpy()
    assert _analyses.holm(p) == pytest.approx(multipletests(p, method="holm")[1])


def test_bayesian_result_renders_diagnostics_ppc_and_posterior_ranks(binary):
    # A Bayesian fit takes minutes here (PyMC compile + NUTS), so the torch result is given the
    # bayes estimator's extra parts: posterior draws, convergence columns and the InferenceData
    # group 'predictive_check' that irtpeer.estimators._bayes_diagnostics reads.
    import dataclasses

    az = pytest.importorskip("arviz")
    import xarray as xr

    ratings, cal, _ = binary
    rng = np.random.default_rng(0)
    models = list(cal.scores["model"])
    draws = {k: pd.DataFrame(rng.normal(cal.scores[k].to_numpy(), 0.05, (400, len(models))),
                             columns=models) for k in ("A", "C", "E", "T", "peer", "dignity")}
    cv = cal.convergence.assign(r_hat_max=[1.05, 1.0, 1.0, 1.0], ess_bulk_min=900.0,
                                ess_tail_min=900.0, divergences=0, chains=4)
    ppc = pd.DataFrame({"dimension": ["A"] * 4, "facet": ["judge"] * 4,
                        "element": ["judge-1", "judge-1", "judge-2", "judge-2"],
                        "category": [0, 1, 0, 1], "observed": [100, 300, 150, 250],
                        "predicted": [110.0, 290.0, 120.0, 280.0], "low": [90.0, 270, 100, 260],
                        "high": [130.0, 310, 140, 300], "p_value": [0.7, 0.3, 0.01, 0.99],
                        "outside": [False, False, True, True]})
    idata = az.InferenceData(posterior=xr.Dataset({"x": (("chain", "draw"), np.zeros((1, 4)))}),
                             predictive_check=xr.Dataset.from_dataframe(ppc))
    bayes = dataclasses.replace(cal, estimator="bayes", draws=draws, convergence=cv, idata=idata)
    html = render_report(bayes, ratings, max_refits=0)
    assert '<section id="bayes">' in html
    assert "[A] R-hat 1.050 &gt; 1.01: the chains disagree" in html
    assert "2 of 4 counts outside their 90% predictive interval" in html
    assert "ranking with its uncertainty (400 posterior draws)" in html
    assert len(figure_svgs(html)) == 11 + 1 + 4  # + the predictive check, + 4 analyses figures


def test_fair_average_by_hand():
    # Fair-M average (FACETS): expected score with the other facets at their mean measure.
    # Rating scale 1..3, thresholds -1, +1; judges centred. Hand-computed references:
    # model at 1.0: eta = 1 - 0 -> numerators 1, e^(1+1), e^(2+(1-1)) -> (1 + 2e^2 + 3e^2)/(1 + 2e^2)
    # judge at 0.5: eta = mean(models) - 0.5 = -0.5 -> 1, e^0.5, e^(0.5-1.5)
    measures = pd.DataFrame({
        "dimension": ["d"] * 6,
        "facet": ["model", "model", "judge", "judge", "threshold", "threshold"],
        "element": ["m1", "m2", "j1", "j2", "2", "3"],
        "measure": [1.0, -1.0, 0.5, -0.5, -1.0, 1.0],
    })
    cal = SimpleNamespace(measures=measures, dimensions=["d"], person="model",
                          meta={"categories": {"d": [1, 2, 3]}, "scales": {"d": "rsm"}})
    fair = _measures.fair_averages(cal)
    e = np.exp
    assert fair[0] == pytest.approx((1 + 2 * e(2) + 3 * e(2)) / (1 + 2 * e(2)))
    assert fair[2] == pytest.approx((1 + 2 * e(0.5) + 3 * e(-1)) / (1 + e(0.5) + e(-1)))
    assert np.isnan(fair[4]) and np.isnan(fair[5])
