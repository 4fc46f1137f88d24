"""Bias/interaction analysis: FACETS' Tables 13 (cells) and 14 (pairwise contrasts).

For a pair of columns of the ratings (``judge`` x ``model``, ``judge`` x ``item``, ``judge`` x
``question``, ...), every cell (one element of each) gets one extra parameter with all main
effects anchored at their calibrated measures: the shift of the linear predictor that makes the
cell's expected score equal its observed score (a cell with all-minimum or all-maximum scores is
moved 0.5 score points inward, as FACETS does). Reported in logits as

    bias > 0: facet_a scores the cell lower than the measures predict (harsher)

with SE = 1/sqrt(cell information), t = bias / SE, df = count - 1, two-sided p from Student's t,
and Holm-adjusted p-values over the cells of each dimension (``p_holm``; ``flag`` when below
``alpha``). :func:`bias_contrasts` compares, for each element of facet_a, its biases on two
elements of facet_b: contrast = bias_1 - bias_2, joint SE sqrt(SE_1^2 + SE_2^2), Welch df.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from .._errors import IrtpeerError
from ._lazy import stats
from ._model import anchored_shift, dimension_models
from ._pvalues import holm

__all__ = ["BIAS_COLUMNS", "bias_contrasts", "bias_interaction"]

BIAS_COLUMNS = ["dimension", "facet_a", "element_a", "facet_b", "element_b", "count", "bias",
                "se", "t", "df", "p_value"]


def check_bias_facets(ratings, facets) -> tuple[str, str]:
    """The two facets of a bias analysis, or a one-line error naming what is wrong."""
    if isinstance(facets, str):
        facets = [f.strip() for f in facets.split(",") if f.strip()]
    facets = list(facets)
    if len(facets) != 2 or facets[0] == facets[1]:
        raise IrtpeerError(
            f"bias analysis needs two different facets, e.g. judge,model; got {','.join(facets)!r}"
        )
    for f in facets:
        if ratings.dimension is not None and f == ratings.dimension:
            raise IrtpeerError(
                f"facet {f!r} is the dimension column: each dimension is calibrated separately, so "
                f"a judge's severity is already measured per dimension (compare its measures "
                f"across dimensions in measures.csv); choose two facets within a dimension"
            )
        if f not in ratings.data.columns or f.startswith("_"):
            cols = [c for c in ratings.data.columns if not c.startswith("_")]
            raise IrtpeerError(
                f"bias facet {f!r} is not a column of the ratings; columns are {', '.join(cols)}"
            )
    return facets[0], facets[1]


def bias_interaction(cal, ratings, facets=("judge", "model"), *, adjust: float = 0.5,
                     alpha: float = 0.05) -> pd.DataFrame:
    """Table 13: one row per dimension x cell of ``facets`` (two ratings columns).

    Columns: ``dimension, facet_a, element_a, facet_b, element_b, count, bias, se, t, df,
    p_value`` then ``observed, expected`` (mean score in score points above the lowest category,
    expected at bias 0), ``status`` (``extreme_min``/``extreme_max`` cells), ``p_holm``, ``flag``.
    """
    fa, fb = check_bias_facets(ratings, facets)
    frames = []
    for dm in dimension_models(cal, ratings):
        keys = pd.DataFrame({"a": dm.frame[fa].astype(str).to_numpy(),
                             "b": dm.frame[fb].astype(str).to_numpy()})
        codes = keys.groupby(["a", "b"], sort=True).ngroup().to_numpy()
        cells = keys.drop_duplicates().sort_values(["a", "b"])
        res = anchored_shift(dm, codes, len(cells), adjust=adjust)
        a_lab, b_lab = cells["a"].tolist(), cells["b"].tolist()
        count = res["count"]
        bias = -res["shift"]
        se = res["se"]
        df = res["n_obs"] - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = bias / se
            p = np.where(df > 0, 2 * stats.t.sf(np.abs(t), np.maximum(df, 1)), np.nan)
            observed = res["observed"] / count
            expected = res["expected"] / count
        part = pd.DataFrame({
            "dimension": dm.dimension, "facet_a": fa, "element_a": list(a_lab), "facet_b": fb,
            "element_b": list(b_lab), "count": count, "bias": bias, "se": se, "t": t, "df": df,
            "p_value": p, "observed": observed, "expected": expected, "status": res["status"],
        })
        ok = np.isfinite(part["p_value"].to_numpy())
        part["p_holm"] = np.nan
        if ok.any():
            part.loc[ok, "p_holm"] = holm(part.loc[ok, "p_value"])
        part["flag"] = part["p_holm"] < alpha
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def bias_contrasts(table: pd.DataFrame) -> pd.DataFrame:
    """Table 14: for each dimension and element of facet_a, every pair of its facet_b cells."""
    rows = []
    for (d, fa, ea, fb), g in table.groupby(["dimension", "facet_a", "element_a", "facet_b"],
                                           sort=False):
        recs = g.to_dict("records")
        for r1, r2 in combinations(recs, 2):
            se = float(np.hypot(r1["se"], r2["se"]))
            v1, v2 = r1["se"] ** 2, r2["se"] ** 2
            with np.errstate(divide="ignore", invalid="ignore"):
                welch = (v1 + v2) ** 2 / (v1**2 / r1["df"] + v2**2 / r2["df"])
                t = (r1["bias"] - r2["bias"]) / se
            p = 2 * stats.t.sf(abs(t), welch) if np.isfinite(welch) and welch > 0 else np.nan
            rows.append({
                "dimension": d, "facet_a": fa, "element_a": ea, "facet_b": fb,
                "element_b_1": r1["element_b"], "element_b_2": r2["element_b"],
                "bias_1": r1["bias"], "bias_2": r2["bias"], "contrast": r1["bias"] - r2["bias"],
                "se": se, "t": t, "df": welch, "p_value": p,
            })
    cols = ["dimension", "facet_a", "element_a", "facet_b", "element_b_1", "element_b_2",
            "bias_1", "bias_2", "contrast", "se", "t", "df", "p_value"]
    return pd.DataFrame(rows, columns=cols)
