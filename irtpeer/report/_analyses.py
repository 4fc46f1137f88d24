"""Sections that render results of :mod:`irtpeer.analyses` and of the Bayesian estimator.

Each builder imports the analysis it needs when it runs: an analysis that is missing from this
installation, or that fails on this data, becomes a visible note in its section (see
:func:`irtpeer.report._sections.guarded`), never a failed report.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from . import _figures as F
from ._sections import Section
from ._tables import Col, TableSpec, make_table


def category_statistics_section(cal, ratings) -> list[Section] | None:
    if all(len(cal.meta.get("categories", {}).get(d, [])) <= 2 for d in cal.dimensions):
        return None
    from ..analyses import category_statistics

    cs = category_statistics(cal, ratings)
    sec = Section("Category statistics", id="category-statistics")
    sec.intro = ("FACETS Table 8 per dimension: category use, observed and expected average "
                 "measures, category outfit and Andrich thresholds. Disordered thresholds or "
                 "averages and categories with fewer than 10 observations are highlighted.")
    for w in cs.attrs.get("warnings", []):
        sec.notice(w)
    cs = cs.copy()
    flags = cs[["disordered", "average_disordered", "low_count"]].astype(bool)
    cs["_cls"] = flags.any(axis=1).map({True: "misfit under", False: ""})
    cs["flags"] = [", ".join(k.replace("_", " ") for k, v in r.items() if v)
                   for r in flags.to_dict(orient="records")]
    cols = [Col("element", "element", -1), Col("category", "category", -1),
            Col("count", "count", None), Col("percent", "%", 1), Col("cum_percent", "cum. %", 1),
            Col("expected_count", "expected count", 1),
            Col("observed_average", "obs. avg measure", 2),
            Col("expected_average", "exp. avg measure", 2), Col("outfit", "outfit MnSq", 2),
            Col("threshold", "threshold", 2), Col("threshold_se", "S.E.", 2),
            Col("flags", "flags", -1)]
    for d, g in cs.groupby("dimension", sort=False):
        if len(cal.meta.get("categories", {}).get(str(d), [])) <= 2:
            continue
        sec.table(make_table(g, TableSpec(cols, caption=f"Dimension {d}", head=10_000,
                                          row_class="_cls")))
    return [sec]


def _fmt_p(df: pd.DataFrame, cols) -> pd.DataFrame:
    df = df.copy()
    for c in cols:
        if c in df:
            df[c] = [("< 0.001" if v < 0.001 else f"{v:.3f}") if pd.notna(v) else ""
                     for v in df[c]]
    return df


def bias_section(cal, ratings, *, alpha: float = 0.05) -> list[Section]:
    from ..analyses import bias_interaction

    person = ratings.person
    fa = "judge" if "judge" in ratings.facets else ratings.facets[0]
    table = bias_interaction(cal, ratings, (fa, person), alpha=alpha)
    sec = Section("Bias / interaction", id="bias")
    n_flag = int(table["flag"].sum())
    sec.intro = (f"FACETS Table 13 for {fa} × {person}: one bias per cell with every main effect "
                 f"anchored (> 0: the {fa} scores that {person} lower than the measures predict). "
                 f"* marks the {n_flag} of {len(table)} cells whose Holm-adjusted p is below "
                 f"{alpha:g}.")
    n_a, n_b = table["element_a"].nunique(), table["element_b"].nunique()
    if n_a <= 60 and n_b <= 60:
        sec.figure(F.bias_heatmaps(table, fa, person), alt=f"bias heatmap of {fa} x {person}")
    else:
        sec.notice(f"{n_a} × {n_b} cells are too many for a heatmap; the table lists the "
                   f"largest biases.")
    t = table.reindex(table["t"].abs().sort_values(ascending=False).index)
    t = _fmt_p(t, ["p_value", "p_holm"])
    t["_cls"] = table.loc[t.index, "flag"].map({True: "misfit under", False: ""})
    cols = [Col("dimension", "dimension", -1), Col("element_a", fa, -1),
            Col("element_b", person, -1), Col("count", "count", None),
            Col("observed", "obs. avg", 2), Col("expected", "exp. avg", 2),
            Col("bias", "bias", 2), Col("se", "S.E.", 2), Col("t", "t", 2),
            Col("p_value", "p", -1), Col("p_holm", "p (Holm)", -1), Col("status", "status", -1)]
    sec.table(make_table(t, TableSpec(cols, caption="Cells by |t|, largest first", head=10,
                                      row_class="_cls", full_hint=(
                                          f"`irtpeer bias PATH --facets {fa},{person} --out "
                                          f"DIR` writes the full table to DIR/bias.csv"))))
    return [sec]


def equating_section(cal, ratings) -> list[Section]:
    sec = Section("Equating between dimensions", id="equating")
    if len(cal.dimensions) < 2:
        sec.note = "Equating needs at least two dimensions; this calibration has one."
        return [sec]
    if "question" not in ratings.facets:
        sec.note = ("Equating needs a question facet (responses = model × question are the "
                    "common persons of the dimensions); these ratings have none.")
        return [sec]
    from ..analyses import equate_dimensions

    res = equate_dimensions(cal, ratings)
    sec.intro = ("Common-person equating (paper appendix B.4): each model × question response "
                 "measured on two dimensions. The line is the identity moved by the linking "
                 "constant (shift), with 95% bands from the mean standard errors; the slope "
                 "(mean/sigma, bootstrap 95% CI) says whether the dimensions share a unit.")
    for n in res.notes:
        sec.notice(n)
    table = res.table.head(15)
    sec.figure(F.equating_panels(res.common, table),
               alt="common-person cross-plots between dimensions")
    t = table.copy()
    t["_cls"] = (t["verdict"] != "comparable").map({True: "misfit under", False: ""})
    cols = [Col("dim_a", "dimension a", -1), Col("dim_b", "dimension b", -1),
            Col("n_common", "common persons", None), Col("shift", "shift", 3),
            Col("slope", "slope", 3), Col("slope_lo", "slope 2.5%", 3),
            Col("slope_hi", "slope 97.5%", 3), Col("correlation", "disattenuated r", 3),
            Col("correlation_observed", "observed r", 3),
            Col("share_within_bands", "share in bands", 3), Col("verdict", "verdict", -1)]
    sec.table(make_table(t, TableSpec(cols, caption="Linking per pair of dimensions", head=50,
                                      row_class="_cls")))
    return [sec]


def stability_section(cal, ratings) -> list[Section]:
    sec = Section("Stability of the ranking", id="stability")
    if "question" not in ratings.facets:
        sec.note = "The stability analysis needs a question facet; these ratings have none."
        return [sec]
    from ..analyses import stability

    res = stability(cal, ratings, posthoc_method=None)
    sec.intro = ("Questions as blocks, models as treatments (the paper's Table 2): the Friedman "
                 "test per scoring method and target, Kendall's W (1 = every question ranks the "
                 "models alike), then Wilcoxon signed-rank post-hoc tests with Holm's "
                 "adjustment.")
    for n in res.notes:
        sec.notice(n)
    fr = res.friedman
    sec.figure(F.kendall_w_bars(fr), alt="Kendall's W per target and method")
    cols = [Col("method", "method", -1), Col("target", "target", -1),
            Col("statistic", "χ²", 1), Col("df", "df", None), Col("p_value", "p", -1),
            Col("kendall_w", "Kendall's W", 3), Col("n_blocks", "questions", None),
            Col("n_models", "models", None)]
    sec.table(make_table(_fmt_p(fr, ["p_value"]), TableSpec(cols, caption="Friedman tests",
                                                            head=50)))
    ph = _posthoc_mfrm(res.per_question, ratings.person)
    if len(ph):
        cols = [Col("target", "target", -1), Col("model_a", "model a", -1),
                Col("model_b", "model b", -1), Col("statistic", "W", 1),
                Col("p_value", "p", -1), Col("p_adjusted", "p (Holm)", -1)]
        sec.table(make_table(_fmt_p(ph, ["p_value", "p_adjusted"]), TableSpec(
            cols, caption="Post-hoc pairs (Wilcoxon signed-rank on the per-question MFRM "
                          "measures, Holm), smallest p first", head=10,
            full_hint="the analysis is irtpeer.analyses.stability")))
    return [sec]


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p-values."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out


def wilcoxon_holm(wide: pd.DataFrame) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests of every pair of columns over complete rows, Holm
    within the table: one vectorised SciPy call (pingouin's loop takes minutes on 5,000
    questions x 20 models)."""
    from scipy.stats import wilcoxon

    wide = wide.dropna()
    cols = list(wide.columns)
    pairs = list(combinations(range(len(cols)), 2))
    if len(wide) < 2 or not pairs:
        return pd.DataFrame(columns=["model_a", "model_b", "statistic", "p_value", "p_adjusted"])
    X = wide.to_numpy(dtype=float)
    diffs = np.stack([X[:, i] - X[:, j] for i, j in pairs], axis=1)
    res = wilcoxon(diffs, axis=0)
    out = pd.DataFrame({"model_a": [str(cols[i]) for i, _ in pairs],
                        "model_b": [str(cols[j]) for _, j in pairs],
                        "statistic": res.statistic, "p_value": res.pvalue})
    out["p_adjusted"] = holm(out["p_value"].fillna(1.0))
    return out


def _posthoc_mfrm(long: pd.DataFrame, person: str) -> pd.DataFrame:
    frames = []
    method = "mfrm" if (long["method"] == "mfrm").any() else long["method"].iloc[0]
    sub = long[long["method"] == method]
    facet = next(c for c in sub.columns if c not in ("method", "target", person, "value"))
    for target, g in sub.groupby("target", sort=False):
        wide = g.pivot_table(index=facet, columns=person, values="value", aggfunc="first")
        frames.append(wilcoxon_holm(wide).assign(target=target))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return out.sort_values("p_adjusted", kind="stable") if len(out) else out


#: Judgments refitted in all for the judge-count curve of a report (refits x rows).
REFIT_BUDGET = 2_000_000


def _refit_plan(n_judges: int, max_refits: int, n_rows: int) -> int:
    """Subsets per panel size so that at most ``max_refits`` refits, and about
    :data:`REFIT_BUDGET` refitted judgments, are spent (0: no refit)."""
    allowed = min(max_refits, REFIT_BUDGET // max(n_rows, 1))
    if n_judges < 2 or n_judges - 1 > allowed:
        return 0
    return max(1, allowed // (n_judges - 1))


def judge_count_section(cal, ratings, *, estimator=None, max_refits: int = 12) -> list[Section]:
    sec = Section("How many judges", id="judges")
    if "judge" not in ratings.facets:
        sec.note = "The judge-count analysis needs a 'judge' facet; these ratings have none."
        return [sec]
    from ..analyses import d_study, judge_count

    n = ratings.data["judge"].nunique()
    per_k = _refit_plan(n, max_refits, len(ratings.data))
    if per_k and estimator is None and cal.estimator == "torch":
        from ..estimators import get_estimator

        cls = get_estimator("torch")
        estimator = cls(cal.spec, **{k: cal.options[k] for k in cls.OPTIONS
                                     if cal.options.get(k) is not None})
    sec.intro = ("Refits with k of the judges compared with the full panel (paper appendix I), "
                 "and the generalizability D-study: the reliability of a response's score with "
                 "n judges.")
    if per_k and estimator is not None:
        res = judge_count(cal, ratings, estimator, max_subsets=per_k)
        curve, dstudy = res.curve, res.d_study
        for n_ in res.notes:
            sec.notice(n_)
    else:
        if max_refits <= 0:
            why = "no refits asked for"
        elif estimator is None and cal.estimator != "torch":
            why = f"refitting the {cal.estimator} estimator is too slow for a report"
        else:
            why = (f"{n} judges would need more refits of {len(ratings.data)} judgments than "
                   f"a report spends: at most {max_refits} refits, {REFIT_BUDGET:,} judgments")
        sec.notice(f"Subset refits left out ({why}); run `irtpeer judges` for the full curve.")
        curve = pd.DataFrame(columns=["target", "k", "tau_models_mean"])
        dstudy = d_study(ratings) if "question" in ratings.facets else pd.DataFrame()
    if len(curve) or len(dstudy):
        sec.figure(F.judge_count_curves(curve, dstudy), alt="judge-count curves")
    if len(curve):
        cols = [Col("target", "target", -1), Col("k", "judges", None),
                Col("subsets", "subsets", None), Col("tau_models_mean", "mean τ-b", 3),
                Col("tau_models_min", "min τ-b", 3), Col("mean_se", "mean S.E.", 3),
                Col("max_shift", "largest move", 3)]
        sec.table(make_table(curve, TableSpec(cols, caption="Subsets of judges vs the full "
                                              "panel", head=50)))
    return [sec]


def bayes_section(cal, ratings) -> list[Section] | None:
    if getattr(cal, "idata", None) is None:
        return None
    from ..estimators._bayes_diagnostics import posterior_predictive_table, warnings

    sec = Section("Bayesian diagnostics", id="bayes")
    sec.intro = ("Convergence (R-hat, effective sample sizes, divergences: see Convergence) and "
                 "the posterior predictive check of each element's score distribution.")
    problems = warnings(cal)
    for w in problems:
        sec.notice(w)
    if not problems:
        sec.text("No convergence warning: R-hat ≤ 1.01, ESS ≥ 100 per chain, no divergences.")
    ppc = posterior_predictive_table(cal)
    sec.figure(F.ppc_scatter(ppc), alt="posterior predictive check")
    out = ppc[ppc["outside"]]
    cols = [Col("dimension", "dimension", -1), Col("facet", "facet", -1),
            Col("element", "element", -1), Col("category", "category", -1),
            Col("observed", "observed", None), Col("predicted", "replicated mean", 1),
            Col("low", "5%", 1), Col("high", "95%", 1)]
    sec.table(make_table(out, TableSpec(cols, caption=f"{len(out)} of {len(ppc)} counts outside "
                                        "their 90% predictive interval", head=10)))
    return [sec]


def analyses_sections(cal, ratings, guarded, *, estimator=None, max_refits: int = 12
                      ) -> list[Section]:
    """Every analysis section, in report order, each guarded."""
    out: list[Section] = []
    out += guarded("Category statistics", category_statistics_section, cal, ratings)
    out += guarded("Bias / interaction", bias_section, cal, ratings)
    out += guarded("Equating between dimensions", equating_section, cal, ratings)
    out += guarded("Stability of the ranking", stability_section, cal, ratings)
    out += guarded("How many judges", judge_count_section, cal, ratings, estimator=estimator,
                   max_refits=max_refits)
    out += guarded("Bayesian diagnostics", bayes_section, cal, ratings)
    return out


__all__ = ["analyses_sections"]
