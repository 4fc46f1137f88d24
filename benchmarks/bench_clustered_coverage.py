"""Coverage of 95% intervals from conditional vs question-clustered SEs (issue 14, item 8).

Truth: theta_mq = theta_m + u_mq with u ~ N(0, sd_u^2); every replicate draws its questions
afresh (difficulties ~ N(0, sd_beta^2), new u); the models, judges and items stay fixed. The
generating theta_m is defined over the question population: relative to the population mean
question difficulty (0) and to the mean of the fixed judges and items (the identification of the
fit). Scored per replicate: does theta_m (and every difference theta_m - theta_m') fall inside
estimate +/- 1.96 SE, for the conditional SE, the sandwich SE and (optionally) the bootstrap.

    python benchmarks/bench_clustered_coverage.py --reps 1000            # full size
    python benchmarks/bench_clustered_coverage.py --reps 200 --boot 0    # quick

Prints one line per SE kind: coverage of models and of differences, with the binomial standard
error of a coverage of 95% at that number of intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import irtpeer
from irtpeer.analyses import question_uncertainty

Z = 1.959963984540054


def draw(rng, theta, alpha, delta, Q, sd_beta, sd_u):
    M, J, R = len(theta), len(alpha), len(delta)
    beta = rng.normal(0, sd_beta, Q)
    u = rng.normal(0, sd_u, (M, Q))
    m, q, j, r = (a.ravel() for a in np.meshgrid(np.arange(M), np.arange(Q), np.arange(J),
                                                 np.arange(R), indexing="ij"))
    eta = theta[m] + u[m, q] - beta[q] - alpha[j] - delta[r]
    score = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"model": [f"m{i}" for i in m], "question": [f"q{i:03d}" for i in q],
                         "judge": [f"j{i}" for i in j], "item": [f"i{i}" for i in r],
                         "score": score})


def replicate(rng, theta, alpha, delta, Q, sd_beta, sd_u, boot=0):
    """Coverage indicators (models, differences) for each SE kind in one replicate."""
    frame = draw(rng, theta, alpha, delta, Q, sd_beta, sd_u)
    ratings = irtpeer.load_ratings(frame)
    est = irtpeer.TorchMFRM(device="cpu")
    cal = est.fit(ratings).calibration_
    models = [f"m{i}" for i in range(len(theta))]
    est_th = cal.scores.set_index("model")["all"].reindex(models).to_numpy()
    truth = theta - alpha.mean() - delta.mean()
    covs = {"conditional": cal.cov["all"].reindex(index=models, columns=models).to_numpy()}
    covs["sandwich"] = question_uncertainty(cal, ratings).cov["all"].to_numpy()
    if boot:
        covs["bootstrap"] = question_uncertainty(cal, ratings, method="bootstrap", estimator=est,
                                                 n_boot=boot, seed=int(rng.integers(1 << 31))
                                                 ).cov["all"].to_numpy()
    M = len(theta)
    iu = np.triu_indices(M, 1)
    out = {}
    for k, V in covs.items():
        se = np.sqrt(np.diag(V))
        cov_m = np.abs(est_th - truth) <= Z * se
        dse = np.sqrt(np.diag(V)[iu[0]] + np.diag(V)[iu[1]] - 2 * V[iu])
        dest = est_th[iu[0]] - est_th[iu[1]]
        dtru = truth[iu[0]] - truth[iu[1]]
        out[k] = (cov_m, np.abs(dest - dtru) <= Z * dse)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=1000)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--judges", type=int, default=3)
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--sd-beta", type=float, default=0.8)
    ap.add_argument("--sd-u", type=float, default=0.5)
    ap.add_argument("--boot", type=int, default=0, help="bootstrap replicates per fit (0: skip)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    theta = np.linspace(-1.0, 1.0, a.models)
    alpha = rng.normal(0, 0.5, a.judges)
    delta = rng.normal(0, 0.7, a.items)
    hits: dict[str, list] = {}
    t0 = time.perf_counter()
    for _ in range(a.reps):
        for k, (cm, cd) in replicate(rng, theta, alpha, delta, a.questions, a.sd_beta, a.sd_u,
                                     a.boot).items():
            hits.setdefault(k, []).append((cm, cd))
    res = {}
    for k, v in hits.items():
        cm = np.concatenate([x for x, _ in v])
        cd = np.concatenate([y for _, y in v])
        res[k] = {"models": float(cm.mean()), "differences": float(cd.mean()),
                  "n_models": len(cm), "n_differences": len(cd),
                  "binomial_se_models": float(np.sqrt(0.95 * 0.05 / a.reps)),
                  }
    res["settings"] = vars(a) | {"seconds": round(time.perf_counter() - t0, 1)}
    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k, v in res.items():
            if k != "settings":
                print(f"{k:12s} coverage models {v['models']:.3f}  differences "
                      f"{v['differences']:.3f}  (per-model binomial SE at 95%: "
                      f"{v['binomial_se_models']:.3f})")
        print(res["settings"])


if __name__ == "__main__":
    main()
