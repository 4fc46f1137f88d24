"""Sections that render results of :mod:`irtpeer.analyses` and of the Bayesian estimator.

Each builder imports the analysis it needs when it runs: an analysis that is missing from this
installation, or that fails on this data, becomes a visible note in its section (see
:func:`irtpeer.report._sections.guarded`), never a failed report.
"""

from __future__ import annotations

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


def analyses_sections(cal, ratings, guarded) -> list[Section]:
    """Every analysis section, in report order, each guarded."""
    out: list[Section] = []
    out += guarded("Category statistics", category_statistics_section, cal, ratings)
    return out


__all__ = ["analyses_sections", "category_statistics_section"]
