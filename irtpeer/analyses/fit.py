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


#: Judgments per chunk within a slice: the chunk's temporaries stay in the CPU cache (a pass
#: over 1.2 M judgments in chunks of 2**20: 0.30 s; of 2**16: 0.19 s).
_CHUNK = 1 << 16


class _Accumulator:
    """Per-element sums over the kept observations, slice by slice: memory is the slice's
    temporaries (and one byte per judgment for the kept mask when some are set aside), not
    several float64 arrays per judgment.

    Each slice's sums are formed from zero in judgment order (``np.add.at`` carries them on
    chunk after chunk, as one ``bincount`` of the slice would) and then added to the totals:
    the slice length, not the chunk length, fixes the last digits."""

    def __init__(self, dm):
        self.dm = dm
        self.first = [np.zeros((len(_SUMS), len(e))) for e in dm.elements]
        self.second = [np.zeros((3, len(e))) for e in dm.elements]
        self.keep: dict[int, np.ndarray] = {}  # chunk start -> kept mask, when not all kept

    def _pass(self, sl, totals, chunk_sums):
        part = [np.zeros_like(t) for t in totals]
        for s in range(sl.start, sl.stop, _CHUNK):
            chunk_sums(slice(s, min(s + _CHUNK, sl.stop)), part)
        for t, p in zip(totals, part):
            t += p

    def first_pass(self, sl):
        self._pass(sl, self.first, self._first_sums)

    def second_pass(self, sl):
        self._pass(sl, self.second, self._second_sums)

    def _chunk(self, sl, keep=None):
        """Element indices (``intp``: numpy converts narrower index arrays on every gather,
        ~3x slower), linear predictor, category index (float) and weights of the
        observations ``sl`` (the kept ones when ``keep`` is given)."""
        dm = self.dm
        codes = [c[sl].astype(np.intp) for c in dm.codes]
        eta = dm.eta_at(codes)
        x = dm.x[sl]
        w = None if dm.weights is None else dm.weights[sl]
        if keep is not None:
            codes, eta, x = [g[keep] for g in codes], eta[keep], x[keep]
            w = None if w is None else w[keep]
        return codes, eta, x.astype(float), w

    def _first_sums(self, sl, part):
        dm = self.dm
        codes, eta, x, w = self._chunk(sl)
        _, E, W, C = dm.moments(sl=sl, probabilities=False, eta=eta)
        keep = ~dm.touches_extreme_of(sl) & (W > 1e-12)
        if not keep.all():
            self.keep[sl.start] = keep
            codes, eta, x = [g[keep] for g in codes], eta[keep], x[keep]
            E, W, C, w = E[keep], W[keep], C[keep], None if w is None else w[keep]
        y2 = np.square(x - E)
        W2 = np.square(W)
        if w is None:  # every weight 1: counts, and w^2 = w
            rows = (None, None, W, y2 / W, y2, C / W2, C - W2, x, eta)
        else:
            w2 = w * w
            rows = (w, w2, w * W, w * y2 / W, w * y2, w2 * C / W2, w2 * (C - W2), w * x, w * eta)
        for g, acc in zip(codes, part):
            if rows[0] is None:  # integer counts: exact in any order
                count = np.bincount(g, minlength=acc.shape[1])
                acc[0] += count
                acc[1] += count
            for k in range(0 if rows[0] is not None else 2, len(rows)):
                np.add.at(acc[k], g, rows[k])

    def _second_sums(self, sl, part):
        codes, eta, x, w = self._chunk(sl, self.keep.get(sl.start))
        for g, f, acc in zip(codes, self.first, part):
            with np.errstate(invalid="ignore", divide="ignore"):
                da = x - (f[7] / f[0])[g]
                db = eta - (f[8] / f[0])[g]
            if w is not None:
                da_w = w * da
                rows = (da_w * db, da_w * da, w * db * db)
            else:
                rows = (da * db, da * da, db * db)
            for k, v in enumerate(rows):
                np.add.at(acc[k], g, v)

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
        for v in stats.values():  # fresh arrays: extreme elements get no fit statistics
            v[extreme] = np.nan
        frames.append(pd.DataFrame({"dimension": dm.dimension, "facet": f, "element": elements,
                                    **stats}))
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
