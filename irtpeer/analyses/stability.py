"""Stability of model rankings over questions: the paper's Table 2 and its Friedman test.

Per scoring method and target, every model gets one value per question:

* ``raw``: the mean score of the model's answer to the question (the paper's Raw Prob for
  binary items);
* ``zscore``: the mean of the judgments standardised per judge (each judge's scores in the
  dimension to mean 0, SD 1), as in Zheng et al. (2023);
* ``mfrm``: the measure of the response (model x question) with every other facet anchored at
  its calibrated measure (:func:`~irtpeer.analyses.response_measures`).

Targets are the dimensions and, where their dimensions exist, ``peer`` = mean(E, C) and
``dignity`` = mean(A, T) of the per-question values. Then, with questions as blocks (complete
blocks only), the Friedman test across models: SciPy's tie-corrected chi^2 form, Kendall's
W = Q / (n (k - 1)), and the F form F = W (n - 1) / (1 - W) with df1 = k - 1 - 2/n and
df2 = (n - 1) df1 (as pingouin's ``friedman(method="f")``). Post-hoc pairwise tests: Wilcoxon
signed-rank with the continuity correction and Holm's adjustment (the default, as pingouin's
``pairwise_tests(parametric=False, padjust="holm")``: each comparison depends only on the two
models), Nemenyi (studentised range of mean ranks) or Conover (t on rank sums, Holm-adjusted).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from .._errors import IrtpeerError
from ._lazy import stats
from ._model import response_measures
from ._pvalues import holm

__all__ = ["FRIEDMAN_COLUMNS", "StabilityResult", "friedman_test", "per_question_scores",
           "posthoc", "stability"]

FRIEDMAN_COLUMNS = ["method", "target", "statistic", "df", "p_value", "kendall_w", "n_blocks",
                    "n_models"]
COMPOSITES = {"peer": ("E", "C"), "dignity": ("A", "T")}
METHODS = ("raw", "zscore", "mfrm")


def _mean_by(frame: pd.DataFrame, values: np.ndarray, person: str, facet: str, d: str):
    w = frame["_weight"].to_numpy(dtype=float) if "_weight" in frame else np.ones(len(frame))
    g = pd.DataFrame({person: frame[person].astype(str).to_numpy(),
                      facet: frame[facet].astype(str).to_numpy(), "wv": w * values, "w": w})
    s = g.groupby([person, facet], sort=True)[["wv", "w"]].sum()
    return pd.DataFrame({"dimension": d, person: s.index.get_level_values(0),
                         facet: s.index.get_level_values(1), "value": (s["wv"] / s["w"]).to_numpy()})


def per_question_scores(cal, ratings, *, facet: str = "question", methods=METHODS) -> pd.DataFrame:
    """Long table ``method, target, <person>, <facet>, value``: one value per model and question."""
    person = ratings.person
    if facet not in ratings.data.columns:
        raise IrtpeerError(f"blocks are the {facet!r} column, which the ratings do not have; "
                           f"name the question column with --blocks")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise IrtpeerError(f"unknown method {unknown[0]!r}; methods are {', '.join(METHODS)}")
    parts = []
    for d in cal.dimensions:
        frame = ratings.dimension_frame(d)
        s = frame["_score"].to_numpy(dtype=float)
        if "raw" in methods:
            parts.append(_mean_by(frame, s, person, facet, d).assign(method="raw"))
        if "zscore" in methods and "judge" in frame.columns and "judge" != person:
            grp = pd.Series(s).groupby(frame["judge"].astype(str).to_numpy())
            sd = grp.transform("std").to_numpy()
            z = np.where(sd > 0, (s - grp.transform("mean").to_numpy()) / sd, 0.0)
            parts.append(_mean_by(frame, np.nan_to_num(z), person, facet, d).assign(method="zscore"))
    if "mfrm" in methods:
        rm = response_measures(cal, ratings, facet=facet)
        parts.append(rm[["dimension", person, facet, "measure"]]
                     .rename(columns={"measure": "value"}).assign(method="mfrm"))
    long = pd.concat(parts, ignore_index=True).rename(columns={"dimension": "target"})
    comps = []
    for name, dims in COMPOSITES.items():
        if all(d in cal.dimensions for d in dims):
            sub = long[long["target"].isin(dims)]
            wide = sub.pivot_table(index=["method", person, facet], columns="target",
                                   values="value", aggfunc="first")
            comp = wide[list(dims)].mean(axis=1, skipna=False).dropna()
            comps.append(comp.rename("value").reset_index().assign(target=name))
    long = pd.concat([long, *comps], ignore_index=True)
    return long[["method", "target", person, facet, "value"]]


def friedman_test(wide: pd.DataFrame) -> dict:
    """Friedman test of a blocks x models table (complete rows only).

    Returns ``statistic`` (SciPy's tie-corrected chi^2), ``df``, ``p_value``, ``kendall_w``,
    the F form (``f``, ``f_df1``, ``f_df2``, ``f_p_value``), ``n_blocks`` and ``n_models``.

    Examples
    --------
    >>> import pandas as pd
    >>> from scipy import stats
    >>> wide = pd.DataFrame({"a": [1, 2, 3, 1, 2], "b": [2, 3, 3, 2, 3], "c": [3, 1, 2, 3, 3]})
    >>> res = friedman_test(wide)
    >>> round(res["statistic"], 4), round(res["kendall_w"], 4), round(res["p_value"], 4)
    (2.3333, 0.2333, 0.3114)
    >>> round(float(stats.friedmanchisquare(wide.a, wide.b, wide.c).statistic), 4)
    2.3333
    """
    wide = wide.dropna()
    n, k = wide.shape
    out = {"n_blocks": n, "n_models": k, "statistic": np.nan, "df": k - 1, "p_value": np.nan,
           "kendall_w": np.nan, "f": np.nan, "f_df1": np.nan, "f_df2": np.nan, "f_p_value": np.nan}
    if k < 3 or n < 2:
        return out
    cols = [wide[c].to_numpy(dtype=float) for c in wide.columns]
    if np.all(np.ptp(np.vstack(cols), axis=0) == 0):
        return out  # every block is one big tie: no information
    q, p = stats.friedmanchisquare(*cols)
    w = q / (n * (k - 1))
    df1 = k - 1 - 2 / n
    df2 = (n - 1) * df1
    f = w * (n - 1) / (1 - w) if w < 1 else np.inf
    out.update(statistic=float(q), p_value=float(p), kendall_w=float(w), f=float(f),
               f_df1=df1, f_df2=df2, f_p_value=float(stats.f.sf(f, df1, df2)))
    return out


def posthoc(wide: pd.DataFrame, method: str = "wilcoxon") -> pd.DataFrame:
    """Pairwise comparisons of the models (columns) over complete blocks (rows).

    ``wilcoxon``: paired Wilcoxon signed-rank tests (continuity-corrected) with Holm's adjustment;
    ``nemenyi``: |R_i - R_j| / sqrt(k (k + 1) / (6 n)) on mean ranks, p from the studentised
    range (q * sqrt(2)) with k groups; ``conover``: t = |S_i - S_j| / sqrt(2 (n A - sum S^2) /
    ((n - 1) (k - 1))) on rank sums S with A the sum of squared ranks, df (n - 1)(k - 1), Holm.
    Columns: ``model_a, model_b, statistic, p_value, p_adjusted, method``.
    """
    wide = wide.dropna()
    n, k = wide.shape
    models = [str(c) for c in wide.columns]
    rows = []
    if method == "wilcoxon":
        # SciPy's signed-rank test with the continuity correction, as pingouin's
        # pairwise_tests(parametric=False) calls it, vectorised over the pairs
        pairs = list(combinations(range(k), 2))
        X = wide.to_numpy(dtype=float)
        if pairs:
            a, b = zip(*pairs)
            res = stats.wilcoxon(X[:, list(a)], X[:, list(b)], axis=0, correction=True)
            p_adj = holm(res.pvalue)
            rows = [(models[i], models[j], float(st), float(p), float(pa))
                    for (i, j), st, p, pa in zip(pairs, res.statistic, res.pvalue, p_adj)]
    elif method in ("nemenyi", "conover"):
        ranks = wide.rank(axis=1).to_numpy()
        S = ranks.sum(0)
        A = float((ranks**2).sum())
        pairs = list(combinations(range(k), 2))
        for i, j in pairs:
            if method == "nemenyi":
                q = abs(S[i] - S[j]) / n / np.sqrt(k * (k + 1) / (6 * n))
                rows.append((models[i], models[j], q, float(stats.studentized_range.sf(
                    q * np.sqrt(2), k, np.inf)), np.nan))
            else:
                denom = np.sqrt(2 * (n * A - float((S**2).sum())) / ((n - 1) * (k - 1)))
                t = abs(S[i] - S[j]) / denom if denom > 0 else np.inf
                rows.append((models[i], models[j], t, float(2 * stats.t.sf(t, (n - 1) * (k - 1))),
                             np.nan))
        if method == "nemenyi":
            rows = [(a, b, s, p, p) for a, b, s, p, _ in rows]
        else:
            adj = holm([r[3] for r in rows])
            rows = [(a, b, s, p, pa) for (a, b, s, p, _), pa in zip(rows, adj)]
    else:
        raise IrtpeerError(f"post-hoc method {method!r} is not one of wilcoxon, nemenyi, conover")
    out = pd.DataFrame(rows, columns=["model_a", "model_b", "statistic", "p_value", "p_adjusted"])
    out["method"] = method
    return out


@dataclass
class StabilityResult:
    """``comparison`` (Table 2: mean and SD over questions per method, target, model),
    ``friedman`` (one row per method x target), ``posthoc``, ``rankings`` (Kendall tau-b and
    Spearman between the methods' model rankings per target) and ``per_question``."""

    comparison: pd.DataFrame
    friedman: pd.DataFrame
    posthoc: pd.DataFrame
    rankings: pd.DataFrame
    per_question: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _rankings(comparison: pd.DataFrame, person: str) -> pd.DataFrame:
    rows = []
    for target, g in comparison.groupby("target", sort=False):
        wide = g.pivot(index=person, columns="method", values="mean")
        for a, b in combinations([m for m in METHODS if m in wide.columns], 2):
            pair = wide[[a, b]].dropna()
            if len(pair) < 2:
                continue
            tau, tau_p = stats.kendalltau(pair[a], pair[b])
            rho, rho_p = stats.spearmanr(pair[a], pair[b])
            rows.append({"target": target, "method_a": a, "method_b": b, "n_models": len(pair),
                         "kendall_tau_b": tau, "tau_p_value": tau_p, "spearman": rho,
                         "spearman_p_value": rho_p})
    return pd.DataFrame(rows)


def stability(cal, ratings, *, facet: str = "question", methods=METHODS,
              posthoc_method: str | None = "wilcoxon") -> StabilityResult:
    """Table 2 and the Friedman test across models for every method and target."""
    person = ratings.person
    long = per_question_scores(cal, ratings, facet=facet, methods=methods)
    grouped = long.groupby(["method", "target", person], sort=False)["value"]
    comparison = grouped.agg(mean="mean", sd="std", n_questions="count").reset_index()
    comparison["rank"] = comparison.groupby(["method", "target"])["mean"].rank(ascending=False)
    fr_rows, ph, notes = [], [], []
    for (method, target), g in long.groupby(["method", "target"], sort=False):
        wide = g.pivot_table(index=facet, columns=person, values="value", aggfunc="first")
        complete = wide.dropna()
        if len(complete) < len(wide):
            notes.append(f"{method}/{target}: {len(wide) - len(complete)} of {len(wide)} "
                         f"questions lack some model and are left out of the Friedman test")
        res = friedman_test(complete)
        if res["n_models"] < 3:
            notes.append(f"{method}/{target}: the Friedman test needs at least 3 models")
        fr_rows.append({"method": method, "target": target, **res})
        if posthoc_method and len(complete) >= 2 and complete.shape[1] >= 2:
            ph.append(posthoc(complete, posthoc_method).assign(method_scores=method, target=target))
    order = {m: i for i, m in enumerate(METHODS)}
    targets = {t: i for i, t in enumerate([*cal.dimensions, *COMPOSITES])}
    friedman = pd.DataFrame(fr_rows).sort_values(
        ["method", "target"], key=lambda c: c.map(order if c.name == "method" else targets),
        kind="stable").reset_index(drop=True)
    friedman = friedman[FRIEDMAN_COLUMNS + [c for c in friedman.columns if c not in FRIEDMAN_COLUMNS]]
    post = pd.concat(ph, ignore_index=True) if ph else pd.DataFrame()
    if len(post):
        post = post.rename(columns={"method": "test", "method_scores": "method"})
        post = post[["method", "target", "test", "model_a", "model_b", "statistic", "p_value",
                     "p_adjusted"]]
    return StabilityResult(comparison=comparison, friedman=friedman, posthoc=post,
                           rankings=_rankings(comparison, person), per_question=long,
                           notes=notes)
