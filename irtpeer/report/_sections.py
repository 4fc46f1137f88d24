"""The report's sections computed from the Calibration alone (any estimator).

Each builder returns a :class:`Section`: a title, an optional intro, and blocks (figures,
tables, text, notes) the template renders in order. :func:`guarded` turns any failure of a
builder into a visible note, so one section that cannot be drawn never stops the report.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _figures as F
from ._tables import Col, TableSpec, fmt, make_table

log = logging.getLogger(__name__)

#: Facets with at most this many elements per dimension get an interval plot by dimension.
SMALL_FACET = 40


@dataclass
class Section:
    title: str
    blocks: list[dict] = field(default_factory=list)
    intro: str = ""
    note: str = ""
    id: str = ""

    def __post_init__(self):
        if not self.id:
            self.id = re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")

    def figure(self, uri: str, alt: str, caption: str = "") -> None:
        self.blocks.append({"kind": "figure", "uri": uri, "alt": alt, "caption": caption})

    def table(self, table: dict) -> None:
        self.blocks.append({"kind": "table", "table": table})

    def heading(self, text: str) -> None:
        self.blocks.append({"kind": "heading", "text": text})

    def text(self, text: str) -> None:
        self.blocks.append({"kind": "text", "text": text})

    def notice(self, text: str) -> None:
        self.blocks.append({"kind": "note", "text": text})


def guarded(title: str, builder, *args, **kwargs) -> list[Section]:
    """Run a section builder; a failure becomes a section holding a note, never an exception."""
    t0 = time.perf_counter()
    try:
        out = builder(*args, **kwargs)
    except ImportError as exc:
        log.info("report section %r unavailable: %s", title, exc)
        return [Section(title, note=f"Not available in this installation: {exc}.")]
    except Exception as exc:  # noqa: BLE001 - one section must not stop the whole report
        log.warning("report section %r failed: %s: %s", title, type(exc).__name__, exc)
        return [Section(title, note=f"Could not be computed on this data "
                                    f"({type(exc).__name__}: {exc}).")]
    finally:
        log.info("report section %r: %.2f s", title, time.perf_counter() - t0)
    if out is None:
        return []
    return out if isinstance(out, list) else [out]


# ---------------------------------------------------------------------- helpers
def person_facet(cal) -> str:
    facets = cal.measures["facet"].unique()
    return cal.person if cal.person in facets else ("response" if "response" in facets
                                                     else cal.person)


def other_facets(cal) -> list[str]:
    p = person_facet(cal)
    return [f for f in dict.fromkeys(cal.measures["facet"]) if f not in (p, "threshold")]


def headline_metrics(cal) -> list[str]:
    comp = [c for c in ("peer", "dignity") if c in cal.scores]
    return comp or list(cal.dimensions)


def rank_probabilities(cal, metric: str, *, draws: int = 4000, seed: int = 0):
    """P(rank = r) per model (rank 1 = highest), and where the draws came from.

    From the posterior draws when the estimator has them, else from the normal approximation
    N(estimates, covariance of the estimates).
    """
    s = cal.scores.set_index(cal.person)[metric].astype(float).dropna()
    models = list(s.index)
    if cal.draws is not None and metric in cal.draws:
        X = cal.draws[metric][models].to_numpy(dtype=float)
        source = f"{len(X)} posterior draws"
    else:
        cov = cal.cov[metric].reindex(index=models, columns=models).to_numpy(dtype=float)
        rng = np.random.default_rng(seed)
        X = rng.multivariate_normal(s.to_numpy(), cov, size=draws, method="eigh",
                                    check_valid="ignore")
        source = f"{draws} draws from the normal approximation (estimates, their covariance)"
    ranks = (-X).argsort(axis=1).argsort(axis=1)  # 0 = best
    k = len(models)
    prob = np.stack([(ranks == r).mean(axis=0) for r in range(k)], axis=1)
    out = pd.DataFrame(prob, index=models, columns=range(1, k + 1))
    expected = (out.to_numpy() * np.arange(1, k + 1)).sum(axis=1)
    lo = np.percentile(ranks, 2.5, axis=0, method="lower") + 1
    hi = np.percentile(ranks, 97.5, axis=0, method="higher") + 1
    summary = pd.DataFrame({"expected_rank": expected, "rank_lo": lo, "rank_hi": hi,
                            "p_best": out[1].to_numpy()}, index=models)
    order = np.argsort(expected, kind="stable")
    return out.iloc[order], summary, source


# ------------------------------------------------------------------- headline
def headline(cal) -> list[Section]:
    sec = Section("Scores", id="scores")
    person = cal.person
    metrics = headline_metrics(cal)
    comp = metrics[0] in ("peer", "dignity")
    sec.intro = (
        "Calibrated measures in logits (higher = better) with 95% intervals, beside the raw "
        "mean score (the paper's Raw Prob for binary items) and the mean of per-judge "
        "standardised scores (Z-score). "
        + ("Peer = mean(E, C), Dignity = mean(A, T)." if comp else "")
    )
    for metric in metrics:
        sec.heading(metric.capitalize() if comp else f"Dimension {metric}")
        view = cal.scores
        sec.figure(F.score_panels(view, metric, person),
                   alt=f"{metric}: calibrated measure with 95% intervals, raw mean and Z-score "
                       f"per {person}")
        prob, ranks, source = rank_probabilities(cal, metric)
        t = view.set_index(person).join(ranks).reset_index()
        t["ci"] = [f"{fmt(m - 1.96 * s)} … {fmt(m + 1.96 * s)}"
                   for m, s in zip(t[metric], t[f"{metric}_se"])]
        t["rank_ci"] = [f"{int(a)}–{int(b)}" if np.isfinite(a) else ""
                        for a, b in zip(t["rank_lo"], t["rank_hi"])]
        t = t.sort_values(metric, ascending=False)
        cols = [Col(person, person, -1), Col(metric, "measure", 3), Col(f"{metric}_se", "S.E.", 3),
                Col("ci", "95% CI", -1), Col(f"raw_{metric}", "Raw Prob / mean", 3),
                Col(f"z_{metric}", "Z-score", 3), Col("expected_rank", "mean rank", 2),
                Col("rank_ci", "95% rank interval", -1), Col("p_best", "P(rank 1)", 2)]
        sec.table(make_table(t, TableSpec(cols, caption=f"{metric}: ranking with its "
                                          f"uncertainty ({source})", head=25)))
        if len(prob) <= 30:
            sec.figure(F.rank_heatmap(prob, metric), alt=f"{metric}: probability of each rank")
    if comp:
        sec.heading("Every dimension")
        cols = [Col(person, person, -1)]
        for d in cal.dimensions:
            cols += [Col(d, d, 3), Col(f"{d}_se", f"{d} S.E.", 3)]
        t = cal.scores.sort_values(metrics[0], ascending=False)
        sec.table(make_table(t, TableSpec(cols, caption="Measure per dimension (logits)",
                                          head=25)))
    return [sec]


# ------------------------------------------------------------------ Wright map
def wright(cal) -> list[Section]:
    sec = Section("Wright map", id="wright")
    sec.intro = ("Persons and every facet on one logit ruler. Facets with many elements are "
                 "shown as histograms; thresholds are the rating-scale category boundaries.")
    p = person_facet(cal)
    for d in cal.dimensions:
        m = cal.measures[cal.measures["dimension"] == d]
        cols = [(f, m[m["facet"] == f]) for f in [p, *other_facets(cal), "threshold"]
                if (m["facet"] == f).any()]
        sec.figure(F.wright_map(cols, d), alt=f"Wright map of dimension {d}")
    return [sec]


# ----------------------------------------------------------- facet measure plots
def facet_plots(cal) -> list[Section]:
    """Small facets: measures with intervals by dimension; large facets: distributions."""
    out = []
    for f in other_facets(cal):
        m = cal.measures[cal.measures["facet"] == f]
        per_dim = m.groupby("dimension", sort=False).size()
        name = {"judge": "Judge severity", "item": "Rubric item difficulty",
                "question": "Question difficulty"}.get(f, f"Facet {f}")
        by_dim = per_dim.max() <= SMALL_FACET and len(per_dim) > 1
        sec = Section(f"{name} by dimension" if by_dim else name, id=f"plot-{f}")
        if per_dim.max() <= SMALL_FACET:
            sec.intro = ("Measures in logits with 95% intervals (higher = more severe / harder), "
                         "one colour per dimension.")
            sec.figure(F.interval_plot(m, "element", "dimension" if len(per_dim) > 1 else None,
                                       "measure (logits)", name),
                       alt=f"{name}: measures with 95% intervals")
        else:
            _distribution(sec, m, f, name)
        out.append(sec)
    return out


def _distribution(sec: Section, m: pd.DataFrame, f: str, name: str, k: int = 5) -> None:
    sec.intro = (f"Distribution of the {f} measures per dimension (higher = harder), with the "
                 f"{k} hardest and easiest of each.")
    data = {d: g["measure"].to_numpy(dtype=float) for d, g in m.groupby("dimension", sort=False)}
    sec.figure(F.distribution_panels(data, "measure (logits)", name),
               alt=f"{name}: histogram of measures per dimension")
    rows = []
    for d, g in m.groupby("dimension", sort=False):
        g = g.sort_values("measure", ascending=False)
        rows.append({"dimension": d,
                     "hardest": _listing(g.head(k)), "easiest": _listing(g.tail(k).iloc[::-1])})
    cols = [Col("dimension", "dimension", -1), Col("hardest", f"{k} hardest (measure)", -1),
            Col("easiest", f"{k} easiest (measure)", -1)]
    sec.table(make_table(pd.DataFrame(rows), TableSpec(cols, caption=f"Hardest and easiest {f}",
                                                      head=10_000)))


def _listing(g: pd.DataFrame) -> str:
    return ", ".join(f"{e} ({fmt(v)})" for e, v in zip(g["element"], g["measure"]))


# -------------------------------------------------------------- category curves
def thresholds(cal, d: str) -> list[tuple[str, np.ndarray, list]]:
    """(panel name, thresholds, categories) of one rating-scale dimension."""
    cats = cal.meta.get("categories", {}).get(d, [])
    thr = cal.measures[(cal.measures["dimension"] == d) & (cal.measures["facet"] == "threshold")]
    if len(cats) <= 2 or thr.empty:
        return []
    lookup = dict(zip(thr["element"].astype(str), thr["measure"].astype(float)))
    if cal.meta.get("scales", {}).get(d) == "pcm":
        heads = sorted({e.rsplit(":", 1)[0] for e in lookup})
        return [(f"{d}: {h}", np.array([lookup[f"{h}:{c}"] for c in cats[1:]]), cats)
                for h in heads[:9]]
    return [(f"dimension {d}", np.array([lookup[str(c)] for c in cats[1:]]), cats)]


def category_section(cal) -> list[Section] | None:
    panels = [p for d in cal.dimensions for p in thresholds(cal, d)]
    if not panels:
        return None
    sec = Section("Rating scale", id="categories")
    sec.intro = ("Category probability curves from the estimated Andrich thresholds: the "
                 "probability of each score as a function of the person measure minus the "
                 "facet measures. Well-functioning scales show each category as the most "
                 "probable somewhere, in order.")
    sec.figure(F.category_curves(panels[:12], "Category probability curves"),
               alt="category probability curves")
    return [sec]


# ------------------------------------------------------------------ convergence
def convergence(cal) -> list[Section]:
    sec = Section("Convergence", id="convergence")
    cv = cal.convergence.copy()
    cols = []
    for c in cv.columns:
        if pd.api.types.is_float_dtype(cv[c]):
            cv[c] = [f"{v:.4g}" if np.isfinite(v) else "" for v in cv[c].astype(float)]
        cols.append(Col(c, c.replace("_", " "), -1))
    sec.table(make_table(cv, TableSpec(cols, caption=f"Estimator {cal.estimator}")))
    ident = pd.DataFrame({"dimension": list(cal.identification),
                          "identification": list(cal.identification.values())})
    sec.table(make_table(ident, TableSpec([Col("dimension", "dimension", -1),
                                           Col("identification", "constraints", -1)])))
    return [sec]
