"""Per-facet measurement tables in the style of FACETS' Table 7, with the facet summary.

Fit statistics and the Table 7 footer come from :mod:`irtpeer.analyses`; when that is missing or
fails, the tables still show the measures and say what is missing. The fair average (FACETS'
"Fair-M average") is the expected score of the element with every other facet at the mean of
its elements' measures, computed here from the thresholds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._figures import category_probabilities
from ._sections import Section, other_facets, person_facet
from ._tables import Col, TableSpec, make_table

_TABLE7 = [
    Col("element", None, -1), Col("measure", "measure", 2),
    Col("se_model", "model S.E.", 2, "1/sqrt(information) of the element alone (FACETS)"),
    Col("se", "S.E.", 2, "full-information S.E. under the identification constraints"),
    Col("count", "count", None), Col("total", "total score", None),
    Col("observed_average", "obs. avg", 2), Col("fair_average", "fair avg", 2,
                                                "expected score with other facets at their mean"),
    Col("infit", "infit MnSq", 2), Col("infit_z", "infit ZStd", 1),
    Col("outfit", "outfit MnSq", 2), Col("outfit_z", "outfit ZStd", 1),
    Col("ptmeasure", "PtMea", 2, "point-measure correlation"),
    Col("fit_flag", "fit", -1), Col("status", "status", -1),
]
_SUMMARY = [
    Col("facet", "facet", -1), Col("elements", "elements", None), Col("extreme", "extreme", None),
    Col("mean", "mean", 2), Col("sd", "SD", 2), Col("rmse", "RMSE", 2),
    Col("adj_sd", "adj. SD", 2), Col("separation", "separation", 2), Col("strata", "strata", 2),
    Col("reliability", "reliability", 2), Col("chi2", "fixed χ²", 1), Col("df", "df", None),
    Col("p_value", "p", 3),
]


def fair_averages(cal) -> pd.Series:
    """Fair average per row of ``cal.measures`` (NaN for thresholds and partial credit)."""
    m = cal.measures
    out = pd.Series(np.nan, index=m.index)
    p = person_facet(cal)
    for d in cal.dimensions:
        cats = np.asarray(cal.meta.get("categories", {}).get(d, [0, 1]), dtype=float)
        if cal.meta.get("scales", {}).get(d) == "pcm" or len(cats) < 2:
            continue
        md = m[m["dimension"] == d]
        thr = md[md["facet"] == "threshold"]
        lookup = dict(zip(thr["element"].astype(str), thr["measure"].astype(float)))
        tau = np.array([lookup.get(str(int(c)), np.nan) for c in cats[1:]]) if len(cats) > 2 \
            else np.zeros(1)
        if np.isnan(tau).any():
            continue
        means = {f: float(np.nanmean(g["measure"])) for f, g in md.groupby("facet")}
        others = [f for f in means if f not in (p, "threshold")]
        for f, g in md.groupby("facet"):
            if f == "threshold":
                continue
            v = g["measure"].to_numpy(dtype=float)
            rest = sum(means[o] for o in others if o != f)
            eta = v - rest if f == p else means.get(p, 0.0) - v - rest
            ok = np.isfinite(eta)
            fair = np.full(len(v), np.nan)
            fair[ok] = category_probabilities(eta[ok], tau) @ cats
            out.loc[g.index] = fair
    return out


def _analyses_tables(cal, ratings):
    """Fit statistics and facet summary, each with its failure reason (``None`` when fine)."""
    fit = summary = None
    problems = []
    try:
        from ..analyses import fit_statistics

        fit = fit_statistics(cal, ratings)
    except Exception as exc:  # noqa: BLE001 - shown as a note; the measures still render
        problems.append(f"fit statistics not available ({type(exc).__name__}: {exc})")
    try:
        from ..analyses import facet_summary

        summary = facet_summary(cal, ratings)
    except Exception as exc:  # noqa: BLE001
        problems.append(f"facet summary not available ({type(exc).__name__}: {exc})")
    return fit, summary, problems


def measurement_tables(cal, ratings, *, head: int = 10, limit: int = 1000) -> list[Section]:
    sec = Section("Measurement tables", id="measures")
    sec.intro = ("FACETS Table 7 style, per dimension and facet, highest measure first. Misfit "
                 "(infit or outfit MnSq above 1.5 with ZStd above 2: underfit; below 0.5 with "
                 "ZStd below −2: overfit) is highlighted and named in the fit column. Long "
                 "tables show their extremes; open the full table below them.")
    m = cal.measures.copy()
    m["fair_average"] = fair_averages(cal).to_numpy()
    fit, summary, problems = _analyses_tables(cal, ratings)
    for msg in problems:
        sec.notice(msg[0].upper() + msg[1:] + ".")
    keys = ["dimension", "facet", "element"]
    if fit is not None:
        m[keys] = m[keys].astype(str)
        # `irtpeer score` may already carry the fit columns: the fresh ones replace them
        m = m.drop(columns=[c for c in fit.columns if c not in keys], errors="ignore")
        m = m.merge(fit, on=keys, how="left")
    m["_cls"] = m.get("fit_flag", pd.Series("", index=m.index)).fillna("").map(
        {"underfit": "misfit under", "overfit": "misfit over"}).fillna("")
    facets = [person_facet(cal), *other_facets(cal)]
    for d in cal.dimensions:
        sec.heading(f"Dimension {d}")
        md = m[m["dimension"].astype(str) == str(d)]
        for f in facets:
            g = md[md["facet"] == f].sort_values("measure", ascending=False)
            if g.empty:
                continue
            cols = [Col("element", f, -1)] + _TABLE7[1:]
            if fit is None:
                cols = [c for c in cols if c.key not in ("infit", "infit_z", "outfit",
                                                         "outfit_z", "ptmeasure", "fit_flag")]
            n_mis = int((g["_cls"] != "").sum())
            cap = f"{f} ({len(g)} elements" + (f", {n_mis} misfitting)" if fit is not None
                                                 else ")")
            sec.table(make_table(g, TableSpec(cols, caption=cap, head=head, limit=limit,
                                              row_class="_cls")))
        if summary is not None:
            s = summary[summary["dimension"].astype(str) == str(d)]
            sec.table(make_table(s, TableSpec(_SUMMARY, caption=f"Facet summary, dimension {d} "
                                              "(model S.E.; extreme elements left out)")))
    return [sec]
