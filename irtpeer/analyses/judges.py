"""How many judges are enough (paper appendix I).

* **The bound.** Judges are centred (sum of severities 0). A panel of N judges in which judge j
  has severity alpha_j (relative to the full panel) is the panel without j plus j: the other N-1
  judges' mean severity is -alpha_j / (N - 1), so refitting without j re-centres them and moves
  every other measure, every model's included, by alpha_j / (N - 1) (``predicted_shift``):
  a common shift that leaves every ranking alone. Equivalently, adding an N-th judge of severity
  a (relative to the N-1 others) moves the existing measures by a / N. What remains
  (``max_centred_shift``) is the change in the models' differences from losing that judge's
  information.
* **Subsets.** For k = 1..N judges, every k-subset of judges (a random sample of ``max_subsets``
  when there are more) is refitted with the estimator given and compared with the full panel:
  Kendall tau-b and Spearman of the model ranking per dimension and composite, Kendall tau-b of
  the question ranking (difficulties), the mean SE of the model measures and the largest move
  of a model measure.
* **D-study** (generalizability theory): from the responses x judges table of mean item scores
  (fully crossed responses only), ANOVA variance components sigma2_p (responses), sigma2_j and
  sigma2_pj,e; then for n judges E rho^2 = sigma2_p / (sigma2_p + sigma2_pj,e / n) and
  Phi = sigma2_p / (sigma2_p + (sigma2_j + sigma2_pj,e) / n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from .._errors import IrtpeerError
from ._lazy import stats
from .refit import ratings_from_frame

__all__ = ["JUDGE_COUNT_COLUMNS", "JudgeCountResult", "d_study", "judge_count"]

JUDGE_COUNT_COLUMNS = ["k", "subsets", "tau_models_mean", "tau_models_min",
                       "spearman_models_mean", "mean_se", "max_shift"]
COMPOSITES = {"peer": ("E", "C"), "dignity": ("A", "T")}


@dataclass
class JudgeCountResult:
    """``curve`` (one row per target x k), ``leave_one_out`` (per dimension x judge: severity,
    predicted shift, observed shifts), ``d_study`` (per dimension x number of judges) and
    ``subsets`` (every refitted subset)."""

    curve: pd.DataFrame
    leave_one_out: pd.DataFrame
    d_study: pd.DataFrame
    subsets: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def _subsets(judges, k, max_subsets, rng):
    n_all = math.comb(len(judges), k)
    if n_all <= max_subsets:
        return [tuple(c) for c in combinations(judges, k)]
    seen: set[tuple] = set()
    while len(seen) < max_subsets:
        seen.add(tuple(sorted(rng.choice(judges, k, replace=False))))
    return sorted(seen)


def _tau(a: pd.Series, b: pd.Series):
    pair = pd.concat([a, b], axis=1).dropna()
    if len(pair) < 2 or pair.iloc[:, 0].nunique() < 2 or pair.iloc[:, 1].nunique() < 2:
        return np.nan, np.nan
    return (stats.kendalltau(pair.iloc[:, 0], pair.iloc[:, 1])[0],
            stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1])[0])


def _compare(cal, full, person, targets, question):
    rows = []
    sc, fs = cal.scores.set_index(person), full.scores.set_index(person)
    for t in targets:
        if t not in sc:
            continue
        tau, rho = _tau(sc[t], fs[t])
        shift = (sc[t] - fs[t]).abs().max()
        tq = np.nan
        if t in full.dimensions and question:
            q_sub = cal.measures[(cal.measures["dimension"] == t) & (cal.measures["facet"] == question)]
            q_full = full.measures[(full.measures["dimension"] == t)
                                   & (full.measures["facet"] == question)]
            tq = _tau(q_sub.set_index("element")["measure"], q_full.set_index("element")["measure"])[0]
        rows.append({"target": t, "tau_models": tau, "spearman_models": rho,
                     "tau_questions": tq, "mean_se": float(sc[f"{t}_se"].mean()),
                     "max_shift": float(shift)})
    return rows


def d_study(ratings, *, judge: str = "judge", facet: str = "question",
            n_judges=None) -> pd.DataFrame:
    """G-study variance components and the D-study projection per dimension (see module doc)."""
    person = ratings.person
    rows = []
    for d in ratings.dimensions:
        f = ratings.dimension_frame(d)
        resp = f[person].astype(str) + "|" + f[facet].astype(str)
        table = (pd.DataFrame({"r": resp.to_numpy(), "j": f[judge].astype(str).to_numpy(),
                               "s": f["_score"].to_numpy(dtype=float)})
                 .pivot_table(index="r", columns="j", values="s", aggfunc="mean").dropna())
        n_p, n_j = table.shape
        if n_p < 2 or n_j < 2:
            continue
        X = table.to_numpy()
        grand = X.mean()
        ms_p = n_j * np.sum((X.mean(1) - grand) ** 2) / (n_p - 1)
        ms_j = n_p * np.sum((X.mean(0) - grand) ** 2) / (n_j - 1)
        resid = X - X.mean(1, keepdims=True) - X.mean(0, keepdims=True) + grand
        ms_e = np.sum(resid**2) / ((n_p - 1) * (n_j - 1))
        s_p = max((ms_p - ms_e) / n_j, 0.0)
        s_j = max((ms_j - ms_e) / n_p, 0.0)
        for n in n_judges or range(1, 2 * n_j + 1):
            rows.append({"dimension": d, "n_judges": n, "e_rho2": s_p / (s_p + ms_e / n),
                         "phi": s_p / (s_p + (s_j + ms_e) / n), "var_response": s_p,
                         "var_judge": s_j, "var_residual": ms_e, "responses": n_p,
                         "judges_observed": n_j})
    return pd.DataFrame(rows)


def _leave_one_out(full, fits, person, judge):
    rows = []
    for d in full.dimensions:
        sev = full.measures[(full.measures["dimension"] == d) & (full.measures["facet"] == judge)]
        n = len(sev)
        th_full = full.scores.set_index(person)[d]
        for j, a in zip(sev["element"], sev["measure"]):
            cal = fits.get(tuple(sorted(set(sev["element"]) - {j})))
            if cal is None or d not in cal.scores:
                continue
            diff = cal.scores.set_index(person)[d] - th_full
            rows.append({"dimension": d, "judge": j, "severity": a,
                         "predicted_shift": a / (n - 1), "bound": abs(a) / (n - 1),
                         "mean_shift": float(diff.mean()), "max_shift": float(diff.abs().max()),
                         "max_centred_shift": float((diff - diff.mean()).abs().max())})
    return pd.DataFrame(rows)


def judge_count(cal, ratings, estimator, *, judge: str = "judge", question: str = "question",
                max_subsets: int = 20, seed: int = 0, progress: bool = False) -> JudgeCountResult:
    """Refit every (sampled) subset of judges and compare it with the full panel ``cal``."""
    if judge not in ratings.facets:
        raise IrtpeerError(f"judge facet {judge!r} is not a facet of the ratings "
                           f"({', '.join(ratings.facets)}); name it with --judge")
    judges = sorted(ratings.data[judge].astype(str).unique())
    if len(judges) < 2:
        raise IrtpeerError(f"the ratings have a single {judge} ({judges[0]!r}); nothing to compare")
    rng = np.random.default_rng(seed)
    targets = [*cal.dimensions, *[k for k, v in COMPOSITES.items() if all(d in cal.dimensions
                                                                          for d in v)]]
    plan = [(k, s) for k in range(1, len(judges)) for s in _subsets(judges, k, max_subsets, rng)]
    if progress:
        from tqdm.auto import tqdm

        plan = tqdm(plan, desc="refitting judge subsets", unit="fit", disable=False)  # asked for: wins over TQDM_DISABLE
    labels = ratings.data[judge].astype(str)
    fits, rows, notes = {tuple(judges): cal}, [], []
    qfacet = question if question in ratings.facets else None
    for k, subset in plan:
        try:
            sub_cal = estimator.fit(ratings_from_frame(
                ratings, ratings.data[labels.isin(subset).to_numpy()])).calibration_
        except IrtpeerError as exc:
            notes.append(f"judges {', '.join(subset)}: not refitted ({str(exc).splitlines()[0]})")
            continue
        fits[tuple(subset)] = sub_cal
        for r in _compare(sub_cal, cal, ratings.person, targets, qfacet):
            rows.append({"k": k, "judges": ",".join(subset), **r})
    for r in _compare(cal, cal, ratings.person, targets, qfacet):
        rows.append({"k": len(judges), "judges": ",".join(judges), **r})
    subsets = pd.DataFrame(rows)
    curve = (subsets.groupby(["target", "k"], sort=False)
             .agg(subsets=("judges", "size"), tau_models_mean=("tau_models", "mean"),
                  tau_models_min=("tau_models", "min"),
                  spearman_models_mean=("spearman_models", "mean"),
                  mean_se=("mean_se", "mean"), max_shift=("max_shift", "max"),
                  tau_questions_mean=("tau_questions", "mean"))
             .reset_index())
    curve = curve[["target", *JUDGE_COUNT_COLUMNS, "tau_questions_mean"]]
    return JudgeCountResult(curve=curve, leave_one_out=_leave_one_out(cal, fits, ratings.person,
                                                                       judge),
                            d_study=d_study(ratings, judge=judge, facet=question)
                            if question in ratings.data.columns else pd.DataFrame(),
                            subsets=subsets, notes=notes)
