"""Facet summaries: the footer of FACETS' Table 7 (measurement report), per dimension and facet.

For the ``L`` non-extreme elements of a facet with measures ``d`` and standard errors ``s``:

* mean, SD (population, / L) and sample SD (/ (L - 1))
* RMSE = sqrt(mean s^2)
* adjusted ("true") SD = sqrt(max(SD^2 - RMSE^2, 0))
* separation G = adjusted SD / RMSE; strata = (4 G + 1) / 3; reliability = G^2 / (1 + G^2)
  (= adjusted SD^2 / SD^2); each for the population SD and, with suffix ``_sample``, the
  sample SD
* fixed (all same) chi^2 = sum w d^2 - (sum w d)^2 / sum w with w = 1 / s^2, df = L - 1, p.

FACETS uses its model S.E. (``se="model"``, our ``se_model``: 1/sqrt(information) of the element
alone). ``se="full"`` uses the full-information ``se`` (with the covariance of the other facets
under the identification constraints); ``se="real"`` inflates the model S.E. by
sqrt(max(infit MnSq, 1)) (FACETS' "Real" S.E.; needs the ratings).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._errors import IrtpeerError

__all__ = ["facet_summary", "separation_statistics"]

_SE_COLUMNS = {"model": "se_model", "full": "se", "real": "se_model"}


def separation_statistics(measure, se, *, p_value: bool = True) -> dict:
    """Table 7 footer figures for one facet's measures and standard errors (arrays);
    ``p_value=False`` leaves out the chi-square's p-value (and the ~0.1 s import of
    scipy.special that it needs)."""
    d = np.asarray(measure, dtype=float)
    s = np.asarray(se, dtype=float)
    ok = np.isfinite(d) & np.isfinite(s) & (s > 0)
    d, s = d[ok], s[ok]
    L = len(d)
    out = {"elements_used": L}
    if L == 0:
        return out
    rmse = float(np.sqrt(np.mean(s**2)))
    out.update(mean=float(d.mean()), sd=float(d.std()), sd_sample=float(d.std(ddof=1)) if L > 1
               else np.nan, min=float(d.min()), max=float(d.max()), range=float(np.ptp(d)),
               rmse=rmse)
    for suffix, sd in (("", out["sd"]), ("_sample", out["sd_sample"])):
        adj = float(np.sqrt(max(sd**2 - rmse**2, 0.0))) if np.isfinite(sd) else np.nan
        g = adj / rmse if rmse > 0 else np.nan
        out[f"adj_sd{suffix}"] = adj
        out[f"separation{suffix}"] = g
        out[f"strata{suffix}"] = (4 * g + 1) / 3
        out[f"reliability{suffix}"] = g * g / (1 + g * g)
    w = 1.0 / s**2
    chi2 = float(np.sum(w * d * d) - np.sum(w * d) ** 2 / np.sum(w))
    out.update(chi2=chi2, df=L - 1)
    if p_value:
        from scipy.special import chdtrc  # chi-square survival; scipy.stats takes ~1 s to import

        out["p_value"] = float(chdtrc(L - 1, chi2)) if L > 1 else np.nan
    return out


def facet_summary(cal, ratings=None, *, se: str = "model", p_values: bool = True) -> pd.DataFrame:
    """Table 7 footer per dimension x facet (thresholds excluded, extreme elements left out).

    Columns: ``dimension, facet, elements, extreme, mean, sd, sd_sample, min, max, range, rmse,
    adj_sd, separation, strata, reliability`` (and their ``_sample`` versions), ``chi2, df,
    p_value, mean_se`` (mean of the full-information ``se``, all elements); ``p_values=False``
    leaves out ``p_value``.
    """
    if se not in _SE_COLUMNS:
        raise IrtpeerError(f"se={se!r} is not one of {', '.join(_SE_COLUMNS)}")
    m = cal.measures
    m = m[m["facet"] != "threshold"].copy()
    se_values = m[_SE_COLUMNS[se]].astype(float)
    if se == "real":
        if ratings is None:
            raise IrtpeerError("se='real' needs the ratings: facet_summary(cal, ratings, se='real')")
        from .fit import fit_statistics

        fit = fit_statistics(cal, ratings)
        infit = fit.set_index(["dimension", "facet", "element"])["infit"]
        keys = pd.MultiIndex.from_frame(m[["dimension", "facet", "element"]].astype(str))
        se_values = se_values * np.sqrt(np.maximum(infit.reindex(keys).to_numpy(), 1.0))
    m["_se"] = se_values.to_numpy()
    rows = []
    for (d, f), g in m.groupby(["dimension", "facet"], sort=False):
        ext = g["status"].astype(str).str.startswith("extreme").to_numpy()
        row = {"dimension": d, "facet": f, "elements": len(g), "extreme": int(ext.sum())}
        row.update(separation_statistics(g["measure"].to_numpy()[~ext], g["_se"].to_numpy()[~ext],
                                         p_value=p_values))
        se = g["se"].astype(float)  # NaN for a facet whose se was not asked for (--se-facets)
        row["mean_se"] = float(se.mean()) if se.notna().any() else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    return out.drop(columns=["elements_used"], errors="ignore")
