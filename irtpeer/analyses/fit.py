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


#: Per-element sums of the first pass (names of :func:`_first_pass` rows).
_SUMS = ("sw", "sw2", "swW", "out", "inf", "qout", "qin", "swx", "sweta")


class _Accumulator:
    """Per-element sums over the kept observations, slice by slice: memory is the slice's
    temporaries (and one byte per judgment for the kept mask when some are set aside), not
    several float64 arrays per judgment."""

    def __init__(self, dm):
        self.dm = dm
        self.first = [np.zeros((len(_SUMS), len(e))) for e in dm.elements]
        self.second = [np.zeros((3, len(e))) for e in dm.elements]
        self.keep: dict[int, np.ndarray] = {}  # slice start -> kept mask, when not all kept

    def _kept(self, sl, keep):
        dm = self.dm

        def kept(a):
            return a if keep is None else a[keep]

        x = kept(dm.x[sl]).astype(float)
        w = None if dm.weights is None else kept(dm.weights[sl])
        return kept, x, w, [kept(c[sl]) for c in dm.codes]

    def first_pass(self, sl):
        dm = self.dm
        eta = dm.eta_of(sl)
        _, E, W, C = dm.moments(sl=sl, probabilities=False)
        keep = ~dm.touches_extreme_of(sl) & (W > 1e-12)
        keep = None if keep.all() else keep
        if keep is not None:
            self.keep[sl.start] = keep
        kept, x, w, codes = self._kept(sl, keep)
        E, W, C, eta = kept(E), kept(W), kept(C), kept(eta)
        y2 = np.square(x - E)
        if w is None:  # every weight 1: counts, and w^2 = w
            rows = (None, None, W, y2 / W, y2, C / np.square(W), C - np.square(W), x, eta)
        else:
            w2 = w * w
            rows = (w, w2, w * W, w * y2 / W, w * y2, w2 * C / np.square(W),
                    w2 * (C - np.square(W)), w * x, w * eta)
        for g, acc in zip(codes, self.first):
            n = acc.shape[1]
            count = np.bincount(g, weights=rows[0], minlength=n)
            acc[0] += count
            acc[1] += count if rows[1] is None else np.bincount(g, weights=rows[1], minlength=n)
            for k in range(2, len(rows)):
                acc[k] += np.bincount(g, weights=rows[k], minlength=n)

    def second_pass(self, sl):
        dm = self.dm
        kept, x, w, codes = self._kept(sl, self.keep.get(sl.start))
        eta = kept(dm.eta_of(sl))
        for g, f, acc in zip(codes, self.first, self.second):
            with np.errstate(invalid="ignore", divide="ignore"):
                da = x - (f[7] / f[0])[g]
                db = eta - (f[8] / f[0])[g]
            if w is not None:
                da_w = w * da
                rows = (da_w * db, da_w * da, w * db * db)
            else:
                rows = (da * db, da * da, db * db)
            for k, v in enumerate(rows):
                acc[k] += np.bincount(g, weights=v, minlength=acc.shape[1])

    def statistics(self, a: int) -> dict:
        sw, sw2, swW, s_out, s_in, s_qout, s_qin, _, _ = self.first[a]
        sab, saa, sbb = self.second[a]
        with np.errstate(divide="ignore", invalid="ignore"):
            outfit, infit = s_out / sw, s_in / swW
            q_out = np.sqrt(np.maximum(s_qout - sw2, 0.0)) / sw
            q_in = np.sqrt(np.maximum(s_qin, 0.0)) / swW
            r = sab / np.sqrt(saa * sbb)
        return {
            "infit": infit,
            "outfit": outfit,
            "infit_z": wilson_hilferty(infit, q_in),
            "outfit_z": wilson_hilferty(outfit, q_out),
            "ptmeasure": np.where((saa > 1e-12) & (sbb > 1e-12), r, np.nan),
        }

def _dimension_fit(dm, step: int) -> list[pd.DataFrame]:
    acc = _Accumulator(dm)
    for sl in dm.slices(step):
        acc.first_pass(sl)
    for sl in dm.slices(step):  # the point-measure correlation, centred on the element means
        acc.second_pass(sl)
    frames = []
    for a, (f, elements, extreme) in enumerate(zip(dm.facets, dm.elements, dm.extreme)):
        stats = acc.statistics(a)
        part = pd.DataFrame({"dimension": dm.dimension, "facet": f, "element": elements, **stats})
        part.loc[extreme, list(stats)] = np.nan
        frames.append(part)
    return frames


def _flags(df: pd.DataFrame, lower: float, upper: float) -> pd.Series:
    under = ((df["infit"] > upper) & (df["infit_z"] > 2)) | (
        (df["outfit"] > upper) & (df["outfit_z"] > 2)
    )
    over = ((df["infit"] < lower) & (df["infit_z"] < -2)) | (
        (df["outfit"] < lower) & (df["outfit_z"] < -2)
    )
    return pd.Series(np.where(under, "underfit", np.where(over, "overfit", "")), index=df.index)


def fit_statistics(cal, ratings, *, lower: float = 0.5, upper: float = 1.5,
                   step: int = 1 << 20) -> pd.DataFrame:
    """Infit/outfit MnSq with ZStd and point-measure correlation for every element.

    Returns one row per row of ``cal.measures`` (same order and keys ``dimension, facet,
    element``; thresholds get NaN) with columns ``infit, outfit, infit_z, outfit_z, ptmeasure,
    fit_flag``; merge it into the measures table on the keys. The judgments are visited
    ``step`` at a time, twice (sums, then the correlation centred on the element means).

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
        frames += _dimension_fit(dm, step)
    fit = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=FIT_COLUMNS[:-1])
    fit["fit_flag"] = _flags(fit, lower, upper)
    keys = cal.measures[["dimension", "facet", "element"]].astype(str)
    fit[["dimension", "facet", "element"]] = fit[["dimension", "facet", "element"]].astype(str)
    out = keys.merge(fit, on=["dimension", "facet", "element"], how="left")
    out["fit_flag"] = out["fit_flag"].fillna("")
    return out[FIT_COLUMNS]
