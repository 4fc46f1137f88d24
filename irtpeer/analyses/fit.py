"""Fit statistics per element: infit and outfit mean-squares, their ZStd, point-measure correlation.

For observation ``i`` with score ``x`` (category index), expected score ``E``, model variance ``W``
and fourth central moment ``C`` (all from :mod:`irtpeer.analyses._model`), the residual is
``y = x - E`` and the standardised residual ``z = y / sqrt(W)``. Per element, with weights ``w``
(1 unless duplicated judgments were averaged):

* outfit MnSq = sum w z^2 / sum w                           (unweighted mean square)
* infit MnSq  = sum w y^2 / sum w W                         (information-weighted)
* their model variances: q_out^2 = sum w^2 (C/W^2 - 1) / (sum w)^2,
  q_in^2 = sum w^2 (C - W^2) / (sum w W)^2
* ZStd by the Wilson-Hilferty cube root: (MnSq^(1/3) - 1) (3/q) + q/3
* point-measure correlation: the (weighted) Pearson correlation, over the element's
  observations, between the score and the linear predictor ``eta`` of the observation (the
  measures that generated it; the element's own measure is constant there).

These are FACETS' Table 7 definitions. Observations that involve an element with an extreme
score (set aside by the estimator) are left out, and extreme elements get no fit statistics.

Misfit flags (``fit_flag``), after Linacre's guidelines: ``underfit`` (noisy, erratic) when the
infit or outfit MnSq is above ``upper`` (default 1.5) with its ZStd above 2; ``overfit``
(muted, too predictable) when a MnSq is below ``lower`` (default 0.5) with its ZStd below -2;
otherwise empty.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._model import dimension_models

__all__ = ["fit_statistics", "wilson_hilferty"]

FIT_COLUMNS = ["dimension", "facet", "element", "infit", "outfit", "infit_z", "outfit_z",
               "ptmeasure", "fit_flag"]


def wilson_hilferty(mnsq, q):
    """ZStd of a mean-square with model SD ``q`` by the Wilson-Hilferty cube-root transform."""
    mnsq = np.asarray(mnsq, dtype=float)
    q = np.asarray(q, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.cbrt(mnsq) - 1.0) * (3.0 / q) + q / 3.0


def _weighted_corr(g, a, b, w, n):
    sw = np.bincount(g, weights=w, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ma = np.bincount(g, weights=w * a, minlength=n) / sw
        mb = np.bincount(g, weights=w * b, minlength=n) / sw
        da, db = a - ma[g], b - mb[g]
        sab = np.bincount(g, weights=w * da * db, minlength=n)
        saa = np.bincount(g, weights=w * da * da, minlength=n)
        sbb = np.bincount(g, weights=w * db * db, minlength=n)
        r = sab / np.sqrt(saa * sbb)
    return np.where((saa > 1e-12) & (sbb > 1e-12), r, np.nan)


def _element_fit(g, n, y, W, C, w, x, eta):
    sw = np.bincount(g, weights=w, minlength=n)
    sw2 = np.bincount(g, weights=w * w, minlength=n)
    swW = np.bincount(g, weights=w * W, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        outfit = np.bincount(g, weights=w * y * y / W, minlength=n) / sw
        infit = np.bincount(g, weights=w * y * y, minlength=n) / swW
        q_out = np.sqrt(np.maximum(np.bincount(g, weights=w * w * C / W**2, minlength=n) - sw2,
                                   0.0)) / sw
        q_in = np.sqrt(np.maximum(np.bincount(g, weights=w * w * (C - W * W), minlength=n), 0.0))
        q_in = q_in / swW
    return {
        "infit": infit,
        "outfit": outfit,
        "infit_z": wilson_hilferty(infit, q_in),
        "outfit_z": wilson_hilferty(outfit, q_out),
        "ptmeasure": _weighted_corr(g, x, eta, w, n),
    }


def _selector(keep: np.ndarray):
    """``a[keep]``, or ``a`` itself when every entry is kept (no copies of per-judgment arrays)."""
    if keep.all():
        return lambda a: a
    return lambda a: a[keep]


def _flags(df: pd.DataFrame, lower: float, upper: float) -> pd.Series:
    under = ((df["infit"] > upper) & (df["infit_z"] > 2)) | (
        (df["outfit"] > upper) & (df["outfit_z"] > 2)
    )
    over = ((df["infit"] < lower) & (df["infit_z"] < -2)) | (
        (df["outfit"] < lower) & (df["outfit_z"] < -2)
    )
    return pd.Series(np.where(under, "underfit", np.where(over, "overfit", "")), index=df.index)


def fit_statistics(cal, ratings, *, lower: float = 0.5, upper: float = 1.5) -> pd.DataFrame:
    """Infit/outfit MnSq with ZStd and point-measure correlation for every element.

    Returns one row per row of ``cal.measures`` (same order and keys ``dimension, facet,
    element``; thresholds get NaN) with columns ``infit, outfit, infit_z, outfit_z, ptmeasure,
    fit_flag``; merge it into the measures table on the keys.

    Examples
    --------
    >>> import irtpeer
    >>> from irtpeer.analyses import fit_statistics
    >>> r = irtpeer.load_ratings(irtpeer.simulate(questions=30, dimensions="A", seed=1).ratings)
    >>> cal = irtpeer.TorchMFRM().fit(r).calibration_
    >>> fit = fit_statistics(cal, r)
    >>> bool(fit.loc[fit.facet == "judge", "infit"].between(0.8, 1.2).all())
    True
    """
    frames = []
    for dm in dimension_models(cal, ratings):
        _, E, W, C = dm.moments()
        keep = ~dm.touches_extreme & (W > 1e-12)
        kept = _selector(keep)
        y, W, C = kept(dm.x - E), kept(W), kept(C)
        w, x, eta = kept(dm.w), kept(dm.x).astype(float), kept(dm.eta)
        for f, codes, elements, extreme in zip(dm.facets, dm.codes, dm.elements, dm.extreme):
            stats = _element_fit(kept(codes), len(elements), y, W, C, w, x, eta)
            part = pd.DataFrame({"dimension": dm.dimension, "facet": f, "element": elements,
                                 **stats})
            part.loc[extreme, list(stats)] = np.nan
            frames.append(part)
    fit = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FIT_COLUMNS[:-1])
    fit["fit_flag"] = _flags(fit, lower, upper)
    keys = cal.measures[["dimension", "facet", "element"]].astype(str)
    fit[["dimension", "facet", "element"]] = fit[["dimension", "facet", "element"]].astype(str)
    out = keys.merge(fit, on=["dimension", "facet", "element"], how="left")
    out["fit_flag"] = out["fit_flag"].fillna("")
    return out[FIT_COLUMNS]
