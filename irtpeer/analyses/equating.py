"""Common-person equating across dimensions (paper appendix B.4).

Every model answers every question and the same judges score each answer on every dimension,
so the model x question responses are *common persons* of the dimensions' scales. Per pair of
dimensions (a, b), over the responses that are not extreme in either (measures from
:func:`~irtpeer.analyses.response_measures`, other facets anchored):

* ``shift``: mean(b) - mean(a), the Rasch linking constant (slope fixed at 1)
* ``slope``: the mean/sigma slope, true SD(b) / true SD(a), with true SD = sqrt(SD^2 - mean SE^2)
  (the measurement error of single responses would otherwise inflate both SDs); ``slope_lo``,
  ``slope_hi``: percentile bootstrap CI over the common persons
* ``correlation``: the disattenuated correlation r / sqrt(rel_a rel_b), rel = true var / var
  (``correlation_observed`` beside it)
* ``share_within_bands``: share of common persons with |b - a - shift| <= z sqrt(SE_a^2 + SE_b^2)
  (inside the 95% bands of the common-person plot after the shift)
* ``verdict``: ``needs linking`` when the slope's CI excludes 1 *and* the slope is off 1 by more
  than ``tolerance`` (10%: a unit 10% longer moves a composite by less than its usual SE);
  otherwise ``comparable``. Only the unit matters for Peer and Dignity: each dimension's origin is
  set by centring its facets, and a shift moves every model's composite alike.

When a composite's dimensions need linking, :attr:`EquatingResult.linked` rescales the second
onto the first's unit (Winsteps' "Celsius-Fahrenheit" equating), x_b' = mean_a + (x_b - mean_b) /
slope, before averaging.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from .._errors import IrtpeerError
from ._model import response_measures

__all__ = ["EQUATING_COLUMNS", "EquatingResult", "equate_dimensions"]

EQUATING_COLUMNS = ["dim_a", "dim_b", "shift", "slope", "slope_lo", "slope_hi", "correlation",
                    "share_within_bands", "verdict"]
COMPOSITES = {"peer": ("E", "C"), "dignity": ("A", "T")}


@dataclass
class EquatingResult:
    """``table`` (one row per pair of dimensions), ``linked`` (per model: each composite as
    averaged and after linking), ``common`` (the common persons' measures, wide)."""

    table: pd.DataFrame
    linked: pd.DataFrame
    common: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _true_sd(x: np.ndarray, se2_mean: float) -> float:
    """sqrt(var - mean SE^2); NaN when the measures vary no more than their error."""
    v = np.var(x, ddof=1) - se2_mean
    return float(np.sqrt(v)) if v > 0 else np.nan


def _boot_slopes(x, sx2, y, sy2, n_boot, rng, chunk=200):
    n = len(x)
    out = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, (min(chunk, n_boot - start), n))
        vx = np.var(x[idx], axis=1, ddof=1) - sx2[idx].mean(1)
        vy = np.var(y[idx], axis=1, ddof=1) - sy2[idx].mean(1)
        out.append(np.sqrt(np.maximum(vy, 1e-12) / np.maximum(vx, 1e-12)))
    return np.concatenate(out)


def _pair(wide, a, b, n_boot, rng, tolerance, z):
    cols = [f"{a}", f"{b}", f"{a}_se", f"{b}_se"]
    sub = wide[cols].dropna()
    n = len(sub)
    if n < 3:
        raise IrtpeerError(f"dimensions {a!r} and {b!r} share only {n} common responses; "
                           f"equating needs the same model x question responses in both")
    x, y = sub[a].to_numpy(), sub[b].to_numpy()
    sx2, sy2 = sub[f"{a}_se"].to_numpy() ** 2, sub[f"{b}_se"].to_numpy() ** 2
    sdx, sdy = _true_sd(x, sx2.mean()), _true_sd(y, sy2.mean())
    slope = sdy / sdx
    if np.isfinite(slope):
        lo, hi = np.percentile(_boot_slopes(x, sx2, y, sy2, n_boot, rng), [2.5, 97.5])
    else:
        lo = hi = np.nan  # no variance beyond the error: no evidence of different units
    r = float(np.corrcoef(x, y)[0, 1])
    rel = (sdx**2 / np.var(x, ddof=1)) * (sdy**2 / np.var(y, ddof=1))
    shift = float(y.mean() - x.mean())
    inside = np.abs(y - x - shift) <= z * np.sqrt(sx2 + sy2)
    off = abs(np.log(slope)) > np.log1p(tolerance)
    needs = bool(np.isfinite(slope) and (lo > 1 or hi < 1) and off)
    return {
        "dim_a": a, "dim_b": b, "shift": shift, "slope": slope, "slope_lo": float(lo),
        "slope_hi": float(hi), "correlation": float(r / np.sqrt(rel)) if rel > 0 else np.nan,
        "share_within_bands": float(inside.mean()),
        "verdict": "needs linking" if needs else "comparable", "n_common": n,
        "correlation_observed": r, "mean_a": float(x.mean()), "mean_b": float(y.mean()),
        "true_sd_a": sdx, "true_sd_b": sdy,
    }


def _linked(cal, person, table):
    scores = cal.scores.set_index(person)
    out = pd.DataFrame(index=scores.index)
    rows = table.set_index(["dim_a", "dim_b"])
    for name, (a, b) in COMPOSITES.items():
        if (a, b) in rows.index:
            r = rows.loc[(a, b)]
            slope, mean_a, mean_b = r["slope"], r["mean_a"], r["mean_b"]
        elif (b, a) in rows.index:
            r = rows.loc[(b, a)]
            slope, mean_a, mean_b = 1.0 / r["slope"], r["mean_b"], r["mean_a"]
        else:
            continue
        slope = slope if r["verdict"] == "needs linking" else 1.0
        xb = mean_a + (scores[b] - mean_b) / slope if slope != 1.0 else scores[b]
        out[name] = (scores[a] + scores[b]) / 2
        out[f"{name}_linked"] = (scores[a] + xb) / 2
        out[f"{name}_linked_se"] = np.sqrt(scores[f"{a}_se"] ** 2
                                           + (scores[f"{b}_se"] / slope) ** 2) / 2
        out[f"{name}_slope"] = slope
    return out.reset_index()


def equate_dimensions(cal, ratings, *, facet: str = "question", pairs=None, n_boot: int = 1000,
                      seed: int = 0, tolerance: float = 0.1, z: float = 1.959964,
                      adjust: float = 0.3) -> EquatingResult:
    """Common-person equating for every pair of dimensions (or the ``pairs`` given)."""
    dims = cal.dimensions
    if len(dims) < 2:
        raise IrtpeerError("equating needs at least two dimensions; the calibration has "
                           f"{len(dims)} ({', '.join(dims)})")
    pairs = list(combinations(dims, 2)) if pairs is None else [tuple(p) for p in pairs]
    for p in pairs:
        for d in p:
            if d not in dims:
                raise IrtpeerError(f"dimension {d!r} is not in the calibration ({', '.join(dims)})")
    person = ratings.person
    rm = response_measures(cal, ratings, facet=facet, adjust=adjust)
    extreme = rm["status"].astype(str) != ""
    notes = []
    if extreme.any():
        notes.append(f"{int(extreme.sum())} extreme responses (all-minimum or all-maximum "
                     f"scores) are left out of the common persons")
    rm = rm[~extreme]
    wide = rm.pivot_table(index=[person, facet], columns="dimension", values=["measure", "se"],
                          aggfunc="first")
    common = pd.DataFrame(index=wide.index)
    for d in dims:
        if ("measure", d) in wide:
            common[d] = wide[("measure", d)]
            common[f"{d}_se"] = wide[("se", d)]
    rng = np.random.default_rng(seed)
    table = pd.DataFrame([_pair(common, a, b, n_boot, rng, tolerance, z) for a, b in pairs])
    for r in table[table["slope"].isna()].itertuples():
        notes.append(f"{r.dim_a}-{r.dim_b}: the responses' measures vary no more than their "
                     f"standard errors, so no slope can be estimated (verdict: comparable, for "
                     f"want of evidence); more judgments per response would help")
    table = table[EQUATING_COLUMNS + [c for c in table.columns if c not in EQUATING_COLUMNS]]
    return EquatingResult(table=table, linked=_linked(cal, person, table),
                          common=common.reset_index(), notes=notes)
