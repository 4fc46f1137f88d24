"""Diagnostics, InferenceData and output files of the Bayesian estimator.

Public helpers for the CLI and users (they take a :class:`~irtpeer.Calibration` of the ``bayes``
estimator): :func:`warnings`, :func:`rank_probabilities`, :func:`posterior_predictive_table`,
:func:`write_bayes_outputs`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._design import DimensionDesign
from .._errors import IrtpeerError
from .._io import atomic_write_text
from ._bayes_model import Cells
from ._bayes_summary import Reported, cell_logprobs

__all__ = ["posterior_predictive_table", "rank_probabilities", "warnings", "write_bayes_outputs"]

#: Thresholds of the convergence warnings (Vehtari et al. 2021).
RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100


# --------------------------------------------------------------------------- per dimension
def model_scores(design: DimensionDesign, rep: Reported) -> np.ndarray:
    """Draws (chain, draw, models) of each model's measure (response mode: mean of responses)."""
    theta = rep.draws[0]
    M = len(design.model_labels)
    if theta.shape[-1] == M and design.person_facet != "response":
        return theta
    L = np.zeros((theta.shape[-1], M))
    counts = np.bincount(design.person_model, minlength=M).astype(float)
    L[np.arange(theta.shape[-1]), design.person_model] = 1.0 / counts[design.person_model]
    return theta @ L


def _convergence(rep: Reported, stats: dict):
    """Worst rank-normalised R-hat and smallest bulk/tail ESS over every reported quantity."""
    from ._bayes_convergence import convergence

    parts = [d for d in rep.draws]
    if rep.tau is not None:
        parts.append(rep.tau.reshape(*rep.tau.shape[:2], -1))
    parts += [v[..., None] for v in rep.scalars.values()]
    x = np.concatenate(parts, axis=-1)
    rhat, bulk, tail = convergence(x)
    return float(np.nanmax(rhat)), float(np.nanmin(bulk)), float(np.nanmin(tail))


def diagnostics_row(design: DimensionDesign, cells: Cells, rep: Reported, stats: dict,
                    options: dict, extra: dict) -> dict:
    """One row of the convergence table: R-hat, ESS, divergences, method, posterior SDs."""
    chains = rep.draws[0].shape[0]
    row = {"dimension": design.dimension}
    approximate = options["method"] != "nuts"
    if approximate:
        rhat = ess_b = ess_t = math.nan
        change = extra.get("elbo_change", math.nan)
        converged = bool(change < 0.01) if np.isfinite(change) else False
    else:
        rhat, ess_b, ess_t = _convergence(rep, stats)
        div = int(np.sum(stats.get("diverging", 0)))
        converged = bool(rhat <= RHAT_MAX and min(ess_b, ess_t) >= ESS_PER_CHAIN_MIN * chains
                         and div == 0)
    row["converged"] = converged
    row.update(r_hat_max=rhat, ess_bulk_min=ess_b, ess_tail_min=ess_t,
               divergences=0 if approximate else int(np.sum(stats.get("diverging", 0))))
    if "tree_depth" in stats:
        row["tree_depth_max"] = int(np.max(stats["tree_depth"]))
    row.update(method=options["method"], sampler=options["sampler"], approximate=approximate,
               chains=chains, draws=rep.draws[0].shape[1])
    for k, v in rep.scalars.items():
        if k.startswith("sigma"):
            row[k] = float(v.mean())
    row.update(n_obs=len(design.data.x), n_cells=int(cells.n_cells),
               n_params=int(sum(cells.sizes) + (0 if rep.tau is None else rep.tau[0, 0].size)))
    if "elbo_change" in extra:
        row["elbo_change"] = extra["elbo_change"]
    return row


def _name(dim: str, what: str) -> str:
    return f"{dim}__{what}".replace("/", "_")


def dimension_idata(design, cells: Cells, rep: Reported, stats: dict, ppc: pd.DataFrame,
                    mdraws: np.ndarray, log_likelihood: bool) -> dict:
    """This dimension's share of the InferenceData groups (variables prefixed by dimension)."""
    import xarray as xr

    dim = design.dimension
    post = {}
    for name, labs, d in zip(rep.names, rep.labels, rep.draws):
        if name == "response":  # models x questions draws: summarised in the measures table only
            continue
        n = _name(dim, name)
        e = f"{n}_element"  # a dimension must not share its variable's name
        post[n] = xr.DataArray(d, dims=("chain", "draw", e), coords={e: np.asarray(labs, str)})
    if rep.tau is not None:
        n = _name(dim, "threshold")
        tau = rep.tau.reshape(*rep.tau.shape[:2], -1)
        post[n] = xr.DataArray(tau, dims=("chain", "draw", f"{n}_step"))
    n = _name(dim, "model_measure")
    post[n] = xr.DataArray(mdraws, dims=("chain", "draw", _name(dim, "models")),
                           coords={_name(dim, "models"): np.asarray(design.model_labels, str)})
    for k, v in rep.scalars.items():
        post[_name(dim, k)] = xr.DataArray(v, dims=("chain", "draw"))
    groups = {"posterior": post,
              "sample_stats": {_name(dim, k): xr.DataArray(v, dims=("chain", "draw"))
                               for k, v in stats.items()},
              "ppc": ppc}
    if log_likelihood:
        groups["log_likelihood"] = {_name(dim, "cells"): xr.DataArray(
            _pointwise_loglik(rep, cells), dims=("chain", "draw", _name(dim, "cell")))}
    return groups


def _pointwise_loglik(rep: Reported, cells: Cells, chunk: int = 100) -> np.ndarray:
    C, D = rep.draws[0].shape[:2]
    out = np.empty((C * D, cells.n_cells))
    for s in range(0, C * D, chunk):
        pick = np.arange(s, min(s + chunk, C * D))
        lp = cell_logprobs(rep, cells, pick)
        out[pick] = np.einsum("sck,ck->sc", lp, cells.counts)
    return out.reshape(C, D, cells.n_cells)


def merge_idata(parts: list[dict]):
    """One ArviZ InferenceData for all dimensions."""
    import warnings as _w

    import arviz as az
    import xarray as xr

    groups = {}
    for g in ("posterior", "sample_stats", "log_likelihood"):
        merged = {}
        for p in parts:
            merged.update(p.get(g, {}))
        if merged:
            groups[g] = xr.Dataset(merged)
    ppc = pd.concat([p["ppc"] for p in parts], ignore_index=True)
    ds = xr.Dataset({c: ("row", ppc[c].to_numpy() if ppc[c].dtype != object
                         else ppc[c].astype(str).to_numpy()) for c in ppc.columns})
    ds["category"] = ds["category"].astype(np.int64)
    groups["predictive_check"] = ds
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        return az.InferenceData(**groups)


# ----------------------------------------------------------------------- public helpers
def _require_bayes(cal):
    if getattr(cal, "idata", None) is None or not hasattr(cal.idata, "posterior"):
        raise IrtpeerError(
            f"this needs a calibration of the 'bayes' estimator (this one is {cal.estimator!r})"
        )


def warnings(cal) -> list[str]:
    """One line per convergence problem: R-hat > 1.01, bulk/tail ESS < 100 per chain,
    divergences, and approximate methods."""
    out = []
    for row in cal.convergence.to_dict(orient="records"):
        d = row.get("dimension")
        if row.get("approximate"):
            out.append(f"[{d}] method {row.get('method')!r} gives an APPROXIMATE posterior; "
                       f"SDs and intervals are often too narrow")
            continue
        chains = int(row.get("chains") or 1)
        rhat = row.get("r_hat_max", math.nan)
        if rhat is not None and np.isfinite(rhat) and rhat > RHAT_MAX:
            out.append(f"[{d}] R-hat {rhat:.3f} > {RHAT_MAX}: the chains disagree; run more "
                       f"--tune/--draws")
        for kind in ("bulk", "tail"):
            ess = row.get(f"ess_{kind}_min", math.nan)
            if ess is not None and np.isfinite(ess) and ess < ESS_PER_CHAIN_MIN * chains:
                out.append(f"[{d}] {kind} ESS {ess:.0f} < {ESS_PER_CHAIN_MIN} per chain "
                           f"({ESS_PER_CHAIN_MIN * chains}); run more --draws")
        div = int(row.get("divergences") or 0)
        if div:
            out.append(f"[{d}] {div} divergent transitions: the posterior may be biased")
    return out


def rank_probabilities(cal) -> pd.DataFrame:
    """Each model's posterior probability of each rank (1 = highest measure), per dimension and
    composite, with its expected rank."""
    if not cal.draws:
        raise IrtpeerError("rank probabilities need posterior draws: use --estimator bayes")
    frames = []
    for key, D in cal.draws.items():
        D = D.dropna(axis=1, how="all")
        vals = D.to_numpy()
        ranks = (-vals).argsort(1).argsort(1) + 1  # 1 = best in each draw
        M = vals.shape[1]
        probs = np.stack([(ranks == r).mean(0) for r in range(1, M + 1)], axis=1)
        df = pd.DataFrame({"dimension": key, cal.person: D.columns,
                           "expected_rank": ranks.mean(0)})
        for r in range(M):
            df[f"rank_{r + 1}"] = probs[:, r]
        frames.append(df.sort_values("expected_rank"))
    return pd.concat(frames, ignore_index=True)


def posterior_predictive_table(cal) -> pd.DataFrame:
    """The posterior predictive check: per dimension, facet element and category, the observed
    count, the replicated mean, its 90% interval, P(replicated >= observed), ``outside``."""
    _require_bayes(cal)
    ds = cal.idata["predictive_check"]
    df = pd.DataFrame({v: ds[v].values for v in ds.data_vars})
    df["outside"] = df["outside"].astype(bool)
    return df


def write_bayes_outputs(cal, out_dir) -> dict[str, Path]:
    """Write ``diagnostics.csv``, ``rank_probabilities.csv``, ``posterior_predictive.csv`` and
    ``idata.nc`` (netCDF) into ``out_dir``, each atomically."""
    _require_bayes(cal)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "diagnostics": out / "diagnostics.csv",
        "rank_probabilities": out / "rank_probabilities.csv",
        "posterior_predictive": out / "posterior_predictive.csv",
        "idata": out / "idata.nc",
    }
    atomic_write_text(paths["diagnostics"], cal.convergence.to_csv(index=False))
    atomic_write_text(paths["rank_probabilities"], rank_probabilities(cal).to_csv(index=False))
    atomic_write_text(paths["posterior_predictive"],
                      posterior_predictive_table(cal).to_csv(index=False))
    tmp = out / f".idata.nc.{os.getpid()}.tmp"
    try:
        cal.idata.to_netcdf(str(tmp))
        os.replace(tmp, paths["idata"])
    finally:
        if tmp.exists():
            tmp.unlink()
    return paths
