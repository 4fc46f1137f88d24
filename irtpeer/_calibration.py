"""The one result object that the CLI, the report and every analysis read from."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._csvtext import csv_text
from ._errors import IrtpeerError
from ._fitrecord import MEASURE_COLUMNS, DimensionFit
from ._io import atomic_write_text, json_default
from .ratings import Ratings, category_codes
from .spec import ModelSpec

__all__ = ["DIGNITY_DIMENSIONS", "PEER_DIMENSIONS", "Calibration"]

#: The paper's composites: Peer = mean(E, C), Dignity = mean(A, T).
PEER_DIMENSIONS = ("E", "C")
DIGNITY_DIMENSIONS = ("A", "T")
_COMPOSITES = {"peer": PEER_DIMENSIONS, "dignity": DIGNITY_DIMENSIONS}

#: The text summary shows the top and bottom this many persons, and the elements of facets with
#: at most SMALL_FACET elements (judges, rubric items).
SHOWN_SCORES = 10
SMALL_FACET = 12

#: Columns of the facet summary (Table 7 footer) shown in the text summary.
_FACET_SUMMARY_SHOWN = ("dimension", "facet", "elements", "extreme", "min", "max", "sd", "rmse",
                        "separation", "reliability")

#: Settings and convergence columns the text summary shows, when an estimator reports them.
_OPTIONS_SHOWN = ("penalty", "device", "threads", "method", "person_prior", "chains", "draws",
                  "tune", "seed")
_CONVERGENCE_SHOWN = ("dimension", "converged", "iterations", "max_score_residual",
                      "log_likelihood", "r_hat_max", "ess_bulk_min", "ess_tail_min",
                      "divergences", "sigma_theta", "sigma_u", "approximate", "n_obs", "n_params")



@dataclass
class Calibration:
    """Calibrated measures of a many-facet Rasch model, with standard errors.

    Attributes
    ----------
    measures
        One row per element of every facet in every dimension: ``dimension, facet, element,
        measure, se, se_model, count, total, observed_average, status``. Persons higher = better;
        every other facet higher = harder / more severe. Rating-scale thresholds appear as facet
        ``threshold`` with element = the upper category of the step.
    scores
        One row per model: each dimension's measure and ``_se``; ``peer``/``dignity`` with SEs
        when their dimensions exist; ``raw_*`` (mean score, the paper's Raw Prob for binary items)
        and ``z_*`` (each judge's scores standardised, then averaged) beside them.
    cov
        Covariance matrices (DataFrames, models x models) of the model-level scores: one per
        dimension and, when they exist, ``peer`` and ``dignity``.
    convergence
        One row per dimension: iterations, max gradient, max score residual, log-likelihood, ...
    identification
        Per dimension, the constraints that fix the scale.
    notes
        Everything the fit decided on the user's behalf (dropped nulls, left-out facets,
        extreme elements, unobserved categories, ...).
    estimator, options
        The estimator's name and the settings it ran with (penalty, device, draws, chains, seed,
        priors, ...): the result holds no estimator internals.
    idata
        The ArviZ ``InferenceData`` of a Bayesian fit (``None`` otherwise).
    draws
        Posterior draws of the model-level scores, one DataFrame (draws x models) per dimension
        and composite, when the estimator has them (``None`` for a point estimator).
    """

    measures: pd.DataFrame
    scores: pd.DataFrame
    cov: dict[str, pd.DataFrame]
    convergence: pd.DataFrame
    identification: dict[str, str]
    notes: list[str]
    spec: ModelSpec
    estimator: str
    options: dict
    source: str
    data_summary: dict
    person: str
    seconds: float = 0.0
    meta: dict = field(default_factory=dict)
    idata: Any = None
    draws: dict[str, pd.DataFrame] | None = None

    @property
    def penalty(self) -> float:
        """The L2 penalty the estimator used (0 for an estimator without one)."""
        return float(self.options.get("penalty") or 0.0)

    # ------------------------------------------------------------ construction
    @classmethod
    def _from_fits(
        cls,
        *,
        ratings: Ratings,
        spec: ModelSpec,
        fits: list[DimensionFit],
        estimator: str,
        options: dict,
        seconds: float,
        notes: list[str] = (),
        idata: Any = None,
    ) -> Calibration:
        """Assemble the per-dimension records of any estimator into one result."""
        dims = [f.dimension for f in fits]
        models = sorted(set().union(*[set(f.models) for f in fits]))
        scores, cov = _model_scores(ratings.person, models, fits)
        _add_raw_and_z(scores, ratings, dims, models)
        draws = _model_draws(fits, models)
        all_notes = list(ratings.notes)
        for n in [n for f in fits for n in f.notes] + list(notes):
            if n not in all_notes:
                all_notes.append(n)
        if "judge" not in ratings.facets:
            all_notes.append("no 'judge' facet: the per-judge Z-score columns are not computed")
        measures = pd.concat([f.measures for f in fits], ignore_index=True)
        extra = [c for c in measures.columns if c not in MEASURE_COLUMNS]
        return cls(
            measures=measures[MEASURE_COLUMNS + extra],
            scores=scores,
            cov=cov,
            convergence=pd.DataFrame([f.diagnostics for f in fits]),
            identification={f.dimension: f.identification for f in fits},
            notes=all_notes,
            spec=spec,
            estimator=estimator,
            options=dict(options),
            source=ratings.source,
            data_summary=dict(ratings.summary),
            person=ratings.person,
            seconds=seconds,
            meta={
                "facets": list(ratings.facets),
                "dimension_column": ratings.dimension,
                "score_column": ratings.score,
                "scales": {f.dimension: f.design.scale for f in fits},
                "categories": {f.dimension: [int(c) for c in f.design.categories] for f in fits},
            },
            idata=idata,
            draws=draws,
        )

    # ------------------------------------------------------------------ access
    @property
    def dimensions(self) -> list[str]:
        return list(self.identification)

    def facet(self, facet: str, dimension: str | None = None) -> pd.DataFrame:
        """The measures of one facet (optionally in one dimension)."""
        m = self.measures[self.measures["facet"] == facet]
        if m.empty:
            raise IrtpeerError(
                f"no facet {facet!r}; facets are {', '.join(self.measures['facet'].unique())}"
            )
        if dimension is not None:
            m = m[m["dimension"] == dimension]
        return m.reset_index(drop=True)

    def conf_int(self, alpha: float = 0.05) -> pd.DataFrame:
        """Wald confidence intervals ``measure ± z * se`` for every element."""
        from scipy.stats import norm

        zq = norm.ppf(1 - alpha / 2)
        out = self.measures[["dimension", "facet", "element", "measure", "se"]].copy()
        out["lower"] = out["measure"] - zq * out["se"]
        out["upper"] = out["measure"] + zq * out["se"]
        return out

    # ----------------------------------------------------------------- display
    def facet_summary(self, ratings=None, *, se: str = "model") -> pd.DataFrame:
        """FACETS Table 7 footer per dimension and facet: spread, RMSE, adjusted SD, separation,
        strata, reliability, fixed chi-square (:func:`irtpeer.analyses.facet_summary`)."""
        from .analyses import facet_summary

        return facet_summary(self, ratings, se=se)

    def summary(self) -> str:
        """A readable text summary: scores, facet spreads, convergence and notes."""
        lines = []
        ds = self.data_summary
        lines.append(f"irtpeer calibration of {self.source}")
        lines.append(
            f"  {ds.get('rows_used', '?')} judgments used ({ds.get('null_scores', 0)} without a "
            f"score left out); estimator {self.estimator} ({self._options_text()}), person mode "
            f"{self.spec.person_mode}, {self.seconds:.2f} s"
        )
        for d, ident in self.identification.items():
            scale = self.meta.get("scales", {}).get(d, "")
            cats = self.meta.get("categories", {}).get(d, [])
            lines.append(f"  [{d}] {scale} ({cats[0]}..{cats[-1]}): {ident}" if cats else f"  [{d}] {ident}")
        lines.append("")
        lines.append("Scores (logits; higher = better; raw and Z-score columns in scores.csv)")
        lines.append(_format_scores(self.scores, self.person, self.dimensions))
        lines.append("")
        lines.append("Facets (measures in logits; higher = harder / more severe)")
        from .analyses.facets import facet_summary

        # no p-values: not shown, and they would import scipy.special (~0.1 s)
        fs = facet_summary(self, p_values=False)[list(_FACET_SUMMARY_SHOWN)]
        lines.append(fs.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        for facet, table in self._small_facets().items():
            lines.append("")
            lines.append(f"{facet} (logits; higher = harder / more severe)")
            lines.append(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.3f}"))
        lines.append("")
        lines.append("Convergence")
        shown = [c for c in _CONVERGENCE_SHOWN if c in self.convergence.columns]
        cv = self.convergence[shown]
        lines.append(cv.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        if self.notes:
            lines.append("")
            lines.append("Notes")
            lines.extend(f"  - {n}" for n in self.notes)
        return "\n".join(lines)

    def _small_facets(self, limit: int = SMALL_FACET) -> dict[str, pd.DataFrame]:
        """Facets with few elements (judges, items), to be shown element by element: a measure
        per dimension when elements cross dimensions, else measure and se within each one."""
        out = {}
        m = self.measures
        for facet in self.meta.get("facets", []):
            sub = m[m["facet"] == facet]
            if sub.empty or sub["element"].nunique() > limit:
                continue
            if sub.groupby("element")["dimension"].nunique().max() == 1:
                table = sub.sort_values(["dimension", "measure"], ascending=[True, False])
                out[facet] = table[["element", "dimension", "measure", "se"]].rename(
                    columns={"element": facet}
                )
                continue
            table = sub.pivot_table(index="element", columns="dimension", values="measure", sort=False)
            table = table.loc[table.mean(axis=1).sort_values(ascending=False).index]
            table.columns = [str(c) for c in table.columns]
            out[facet] = table.reset_index().rename(columns={"element": facet})
        return out

    def _options_text(self) -> str:
        shown = {k: v for k, v in self.options.items() if k in _OPTIONS_SHOWN and v is not None}
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())

    def __repr__(self) -> str:
        return (
            f"<Calibration of {self.source}: {len(self.scores)} models, dimensions "
            f"{', '.join(self.dimensions)}, {self.estimator} estimator>"
        )

    # ------------------------------------------------------------------ output
    def to_dict(self, *, tables: bool = True) -> dict:
        """Everything as plain values; ``tables=False`` leaves out ``measures`` and ``scores``
        (calibration.json, written beside their CSV files)."""

        def clean(df: pd.DataFrame):
            recs = df.to_dict(orient="records")
            return [
                {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
                for r in recs
            ]

        return {
            "source": self.source,
            "estimator": self.estimator,
            "options": self.options,
            "person": self.person,
            "person_mode": self.spec.person_mode,
            "scale": self.spec.scale,
            "data_summary": self.data_summary,
            "identification": self.identification,
            "meta": self.meta,
            "notes": self.notes,
            "convergence": clean(self.convergence),
            **({"scores": clean(self.scores), "measures": clean(self.measures)} if tables else {}),
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, default=json_default)
        if path is not None:
            atomic_write_text(Path(path), text)
        return text

    def to_csv(self, directory: str | os.PathLike) -> dict[str, Path]:
        """Write ``measures.csv``, ``scores.csv``, ``convergence.csv`` and ``calibration.json``.

        Each file is written to a temporary name and renamed, so an interrupted run never
        leaves a partial file that looks complete.
        """
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise IrtpeerError(f"--out {str(out)!r} exists and is not a folder; choose a folder path")
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "measures": out / "measures.csv",
            "scores": out / "scores.csv",
            "convergence": out / "convergence.csv",
            "calibration": out / "calibration.json",
        }
        # csv_text: the text of to_csv(index=False), float columns ~5x faster (0.55 -> 0.1 s
        # for the measures of 62,500 questions)
        atomic_write_text(paths["measures"], csv_text(self.measures))
        atomic_write_text(paths["scores"], csv_text(self.scores))
        atomic_write_text(paths["convergence"], csv_text(self.convergence))
        meta = self.to_dict(tables=False)  # the tables are in their CSV files
        atomic_write_text(paths["calibration"], json.dumps(meta, indent=2, default=json_default))
        return paths


def _model_scores(person: str, models: list[str], fits: list[DimensionFit]):
    """Per-model scores with SEs, composites, and the covariance matrices of each."""
    scores = pd.DataFrame({person: models})
    cov: dict[str, pd.DataFrame] = {}
    for f in fits:
        d = f.dimension
        labels = f.models
        m = pd.Series(f.model_measure, index=labels)
        # the record's own matrix, not a copy (32 MB at 2,000 models: 20 ms); reindexing to the
        # same labels copies nothing either
        c = pd.DataFrame(f.model_cov, index=labels, columns=labels, copy=False).reindex(
            index=models, columns=models)
        scores[d] = m.reindex(models).to_numpy()
        scores[f"{d}_se"] = np.sqrt(np.diag(c.to_numpy()))
        cov[d] = c
    for name, parts in _present_composites([f.dimension for f in fits]):
        scores[name] = sum(scores[p] for p in parts) / len(parts)
        # the dimensions are fitted separately: their estimates are independent
        cov[name] = sum(cov[p] for p in parts) / len(parts) ** 2
        scores[f"{name}_se"] = np.sqrt(np.diag(cov[name].to_numpy()))
    return scores, cov


def _present_composites(dims):
    return [(name, parts) for name, parts in _COMPOSITES.items() if all(p in dims for p in parts)]


def _model_draws(fits: list[DimensionFit], models: list[str]):
    """Draws (draws x models) per dimension and composite, when every fit has them."""
    if not fits or any(f.model_draws is None for f in fits):
        return None
    draws = {
        f.dimension: pd.DataFrame(f.model_draws, columns=f.models).reindex(columns=models)
        for f in fits
    }
    n = min(len(d) for d in draws.values())
    for name, parts in _present_composites(list(draws)):
        draws[name] = sum(draws[p].iloc[:n].reset_index(drop=True) for p in parts) / len(parts)
    return draws


def _add_raw_and_z(scores: pd.DataFrame, ratings: Ratings, dims: list[str], models: list[str]):
    raw, z = _raw_and_z(ratings, dims)
    for prefix, table in (("raw", raw), ("z", z)):
        if table is None:
            continue
        for d in dims:
            scores[f"{prefix}_{d}"] = table[d].reindex(models).to_numpy()
        for name, parts in _present_composites(dims):
            scores[f"{prefix}_{name}"] = sum(scores[f"{prefix}_{p}"] for p in parts) / len(parts)


#: Judgments per slice in the per-judgment passes below (a few MB of temporaries each).
_STEP = 1 << 22


def _labels_codes(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes of a label column and the labels as text (a categorical's own codes)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return category_codes(col), pd.Index(col.cat.categories.astype(str))
    codes, uniques = pd.factorize(col, sort=False)
    return codes, pd.Index(uniques).astype(str)


def _sums(groups: np.ndarray, n: int, per_slice) -> np.ndarray:
    """``bincount(groups, weights=per_slice(slice))`` summed slice by slice (no float64 copy of
    a per-judgment array); ``per_slice`` returning ``None`` counts."""
    out = np.zeros(n)
    for s in range(0, len(groups), _STEP):
        sl = slice(s, s + _STEP)
        out += np.bincount(groups[sl], weights=per_slice(sl), minlength=n)
    return out


def _inverse_sd(count, s1, s2) -> np.ndarray:
    """1/SD (ddof 1) from exact integer count, sum and sum of squares per group; 0 where the
    SD is 0 or undefined (such a judge's standardised scores count as 0). Integer arithmetic:
    no cancellation."""
    inv_sd = np.zeros(len(count))
    for k in np.flatnonzero(np.asarray(count) > 1):
        n = int(count[k])
        num = n * int(s2[k]) - int(s1[k]) ** 2
        if num > 0:
            inv_sd[k] = 1.0 / np.sqrt(num / (n * (n - 1)))
    return inv_sd


def _judge_moments(j: np.ndarray, n_j: int, score: np.ndarray):
    """Mean and 1/SD (ddof 1) of the scores of every judge (sums of integer scores in float64
    are exact below 2**53)."""
    count = np.bincount(j, minlength=n_j)
    s1 = _sums(j, n_j, lambda sl: score[sl])
    s2 = _sums(j, n_j, lambda sl: np.square(score[sl], dtype=np.float64))
    mean = np.divide(s1, count, out=np.zeros(n_j), where=count > 0)
    return mean, _inverse_sd(count, s1, s2)


#: Above this many (person, judge, score) cells the raw/Z columns are summed judgment by
#: judgment instead of from the cell counts.
_MAX_CELLS = 1 << 24


def _raw_and_z(ratings: Ratings, dims: list[str]):
    """Raw mean score per model and dimension, and the mean of per-judge standardised scores.

    Computed from integer codes, slice by slice, with no per-judgment float64 array (the same
    numbers as a groupby, which held several): usually from the counts of every (person,
    judge, score) cell, one pass over the judgments."""
    raw, z = {}, {}
    has_judge = "judge" in ratings.data.columns and "judge" in ratings.facets
    for d in dims:
        sub = ratings.dimension_frame(d)
        score = sub["_score"].to_numpy()
        p, labels = _labels_codes(sub[ratings.person])
        j, n_j = None, 1
        if has_judge:
            j, judges = _labels_codes(sub["judge"])
            n_j = len(judges)
        lo, hi = int(score.min()), int(score.max())
        w = ratings.weights(sub)
        if len(labels) * n_j * (hi - lo + 1) <= _MAX_CELLS:
            raw[d], z[d] = _from_cells(p, len(labels), j, n_j, score, lo, hi - lo + 1, w)
        else:
            raw[d], z[d] = _by_judgment(p, len(labels), j, n_j, score, w)
        raw[d] = pd.Series(raw[d], index=labels)
        z[d] = None if z[d] is None else pd.Series(z[d], index=labels)
    return raw, (z if has_judge else None)


def _cell_counts(p, n_p, j, n_j, score, lo, n_r, w):
    """(n_p, n_j, n_r) counts of every (person, judge, score) cell, weighted when ``w``.

    Cell keys are built in ``intp`` (bincount converts any other type first). Unweighted counts
    are exact integers in any order, so they are taken in slices that stay in the CPU cache
    (7 M judgments: 45 -> 24 ms); weighted sums keep the ``_STEP`` slices that fix their last
    digits."""
    n = n_p * n_j * n_r
    step = _STEP if w is not None else min(_STEP, max(1 << 16, n))
    out = np.zeros(n) if w is not None else np.zeros(n, dtype=np.int64)
    for s in range(0, len(p), step):
        sl = slice(s, s + step)
        key = p[sl].astype(np.intp)
        if j is not None:
            key *= n_j
            key += j[sl]
        key *= n_r
        key += score[sl]
        key -= lo
        out += np.bincount(key, weights=None if w is None else w[sl], minlength=n)
    return out.astype(np.float64, copy=False).reshape(n_p, n_j, n_r)


def _from_cells(p, n_p, j, n_j, score, lo, n_r, w):
    values = np.arange(lo, lo + n_r, dtype=np.float64)
    cw = _cell_counts(p, n_p, j, n_j, score, lo, n_r, w)
    wsum = cw.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = (cw @ values).sum(axis=1) / wsum
        if j is None:
            return raw, None
        c = cw if w is None else _cell_counts(p, n_p, j, n_j, score, lo, n_r, None)
        per_judge = c.sum(axis=0).astype(np.int64)  # (n_j, n_r) unweighted counts
        ints = np.arange(lo, lo + n_r, dtype=np.int64)
        count, s1, s2 = per_judge.sum(1), per_judge @ ints, per_judge @ (ints * ints)
        mean = np.divide(s1, count, out=np.zeros(n_j), where=count > 0)
        inv_sd = _inverse_sd(count, s1, s2)
        # sum over a person's judgments of w (s - mean_j) / sd_j, from the cells
        zsum = ((cw @ values) - mean[None, :] * cw.sum(axis=2)) @ inv_sd
        return raw, zsum / wsum


def _by_judgment(p, n_p, j, n_j, score, w):
    wsum = _sums(p, n_p, (lambda sl: None) if w is None else (lambda sl: w[sl]))
    tot = _sums(p, n_p, (lambda sl: score[sl]) if w is None else (lambda sl: w[sl] * score[sl]))
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = tot / wsum
        if j is None:
            return raw, None
        mean, inv_sd = _judge_moments(j, n_j, score)

        def zz(sl):
            out = (score[sl] - mean[j[sl]]) * inv_sd[j[sl]]
            return out if w is None else out * w[sl]

        return raw, _sums(p, n_p, zz) / wsum


def _format_scores(scores: pd.DataFrame, person: str, dims: list[str]) -> str:
    cols = [person]
    for name in [n for n in ("peer", "dignity") if n in scores] + list(dims):
        cols += [c for c in (name, f"{name}_se", f"{name}_se_q") if c in scores]
    for name in ("peer", "dignity"):
        if f"raw_{name}" in scores:
            cols.append(f"raw_{name}")
        if f"z_{name}" in scores:
            cols.append(f"z_{name}")
    if "peer" not in scores and "dignity" not in scores and len(dims) <= 2:
        cols += [f"raw_{d}" for d in dims if f"raw_{d}" in scores]
    sort_col = "peer" if "peer" in scores else dims[0]
    view = scores[cols].sort_values(sort_col, ascending=False)
    fmt = {"index": False, "float_format": lambda v: f"{v:.3f}"}
    if len(view) <= 2 * SHOWN_SCORES:
        return view.to_string(**fmt)
    top = view.head(SHOWN_SCORES).to_string(**fmt)
    bottom = view.tail(SHOWN_SCORES).to_string(header=False, **fmt)
    hidden = len(view) - 2 * SHOWN_SCORES
    return f"{top}\n  ... {hidden} more {person} rows (all {len(view)} in scores.csv) ...\n{bottom}"
