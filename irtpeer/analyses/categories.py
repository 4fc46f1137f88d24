"""Rating-scale category statistics: FACETS' Table 8, per dimension (and partial-credit element).

Per category ``k`` (an observed score value; the model uses them as consecutive steps):

* ``count``, ``percent``, ``cum_percent``, ``expected_count`` (sum of model probabilities)
* ``observed_average``: mean linear predictor ``eta`` (the measures that generated the
  observation) of the observations in the category; ``expected_average``: the same mean
  weighted by the model probability of the category, sum P_k eta / sum P_k
* ``outfit``: the squared standardised residuals of the observations in the category, summed and
  divided by their model expectation sum_i P_ik (k - E_i)^2 / W_i (1 when the category behaves
  as modelled; above 1: unexpected use)
* ``threshold`` and ``threshold_se``: the Andrich threshold of the step from the category below
  (from the measures table)
* ``disordered``: the threshold is below the previous one (the category is never the most
  probable one anywhere); ``average_disordered``: the observed average is not above the previous
  category's; ``low_count``: fewer than 10 observations (Linacre's guideline).

The DataFrame's ``attrs["warnings"]`` lists the disordered thresholds in words.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._model import dimension_models

__all__ = ["category_statistics"]


def _one_group(dm, sel, P, E, W, thr: dict, element: str) -> list[dict]:
    w = dm.w[sel]
    x = dm.x[sel]
    eta = dm.eta[sel]
    Pk = P[sel]
    tot = w.sum()
    rows = []
    for k, cat in enumerate(dm.categories):
        obs = x == k
        cnt = float(w[obs].sum())
        expc = float((w * Pk[:, k]).sum())
        z2 = (k - E[sel]) ** 2 / W[sel]
        rows.append({
            "dimension": dm.dimension,
            "element": element,
            "category": int(cat),
            "count": cnt,
            "percent": 100 * cnt / tot if tot else np.nan,
            "expected_count": expc,
            "observed_average": float((w * eta)[obs].sum() / cnt) if cnt else np.nan,
            "expected_average": float((w * Pk[:, k] * eta).sum() / expc) if expc else np.nan,
            "outfit": float((w * z2)[obs].sum() / (w * Pk[:, k] * z2).sum()) if expc else np.nan,
            "threshold": thr.get(str(cat), (np.nan, np.nan))[0] if k else np.nan,
            "threshold_se": thr.get(str(cat), (np.nan, np.nan))[1] if k else np.nan,
        })
    return rows


def category_statistics(cal, ratings, *, min_count: int = 10) -> pd.DataFrame:
    """Table 8 per dimension (rows per category; partial credit: per element and category)."""
    rows, warnings = [], []
    for dm in dimension_models(cal, ratings):
        P, E, W, _ = dm.moments()
        meas = cal.measures[(cal.measures["dimension"].astype(str) == dm.dimension)
                            & (cal.measures["facet"] == "threshold")]
        thr_all = {str(e): (float(m), float(s)) for e, m, s in
                   zip(meas["element"], meas["measure"], meas["se"])}
        W = np.where(W > 1e-12, W, np.nan)
        if dm.pcm_facet is None:
            groups = [("", np.arange(dm.n), thr_all)]
        else:
            labels = dm.frame[dm.pcm_facet].astype(str).to_numpy()
            groups = []
            for e in np.unique(labels):
                pre = f"{e}:"
                thr = {k[len(pre):]: v for k, v in thr_all.items() if k.startswith(pre)}
                groups.append((e, np.flatnonzero(labels == e), thr))
        for element, sel, thr in groups:
            part = _one_group(dm, sel, P, E, W, thr, element)
            t = np.array([r["threshold"] for r in part[1:]])
            a = np.array([r["observed_average"] for r in part])
            for i, r in enumerate(part):
                r["cum_percent"] = float(np.sum([p["percent"] for p in part[: i + 1]]))
                r["disordered"] = bool(i >= 2 and t[i - 1] < t[i - 2])
                r["average_disordered"] = bool(i >= 1 and a[i] <= a[i - 1])
                r["low_count"] = bool(r["count"] < min_count)
                if r["disordered"]:
                    where = f" of {dm.pcm_facet} {element!r}" if element else ""
                    warnings.append(
                        f"dimension {dm.dimension!r}{where}: threshold of category {r['category']} "
                        f"({t[i - 1]:.2f}) is below the previous one ({t[i - 2]:.2f}): "
                        f"disordered; consider merging category {r['category']} with a neighbour"
                    )
            rows.extend(part)
    cols = ["dimension", "element", "category", "count", "percent", "cum_percent",
            "expected_count", "observed_average", "expected_average", "outfit", "threshold",
            "threshold_se", "disordered", "average_disordered", "low_count"]
    out = pd.DataFrame(rows, columns=cols)
    if not (out["element"] != "").any():
        out = out.drop(columns=["element"])
    out.attrs["warnings"] = warnings
    return out
