"""Fit time and peak memory of irtpeer's torch estimator vs scikit-learn's LogisticRegression.

The alternative a user would otherwise pick for a dichotomous many-facet Rasch model is a ridge
logistic regression on a sparse one-hot design (one column per model, question, judge and item).
irtpeer's penalty ``lambda/2 * sum(params^2)`` on the over-parametrised model is exactly that
objective with ``C = 1/lambda, fit_intercept=False``, so both fits target the same optimum and
the objective gap is meaningful. scikit-learn gives no standard errors; irtpeer's time includes
them (exact, under the sum-to-zero constraints).

Each fit runs in its own subprocess so that its peak resident memory (ru_maxrss) is its own,
including building the data. ``end to end`` is ``irtpeer score`` run as a user runs it on the same
data written to a parquet file (import, load, fit with SEs, outputs), with its wall time and peak
memory from ``/usr/bin/time -v``.

    python benchmarks/bench_calibration.py                 # 1.2 M ratings, both estimators
    python benchmarks/bench_calibration.py --questions 62500 --skip-sklearn   # 15 M ratings
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MODELS, JUDGES, ITEMS = 20, 4, 3


def make_data(n_questions: int, seed: int = 0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    m, q, j, r = (a.ravel().astype(np.int32) for a in np.meshgrid(
        np.arange(MODELS), np.arange(n_questions), np.arange(JUDGES), np.arange(ITEMS), indexing="ij"))
    eta = (rng.normal(0, 1, MODELS)[m] - rng.normal(0, 1, n_questions)[q]
           - rng.normal(0, 0.5, JUDGES)[j] - rng.normal(0, 0.7, ITEMS)[r])
    y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(np.int8)
    del eta

    def cat(codes, prefix, n):
        return pd.Categorical.from_codes(codes, [f"{prefix}{i}" for i in range(n)])

    df = pd.DataFrame({
        "model": cat(m, "m", MODELS), "question": cat(q, "q", n_questions),
        "judge": cat(j, "j", JUDGES), "item": cat(r, "i", ITEMS), "score": y,
    })
    return df


def run_irtpeer(n_questions: int, penalty: float, device: str) -> dict:
    import resource

    import numpy as np

    import irtpeer

    df = make_data(n_questions)
    t0 = time.perf_counter()
    ratings = irtpeer.load_ratings(df)
    t1 = time.perf_counter()
    est = irtpeer.TorchMFRM(penalty=penalty, device=device).fit(ratings)
    t2 = time.perf_counter()
    cal = est.calibration_
    assert np.isfinite(cal.measures["se"]).all()
    return {
        "load_s": t1 - t0,
        "fit_s": t2 - t1,
        "objective": float(cal.convergence["objective"].iloc[0]),
        "iterations": int(cal.convergence["iterations"].iloc[0]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "n": len(df),
    }


def run_cli(n_questions: int, penalty: float, device: str) -> dict:
    """`irtpeer score` on a parquet file of the same data: wall seconds and peak RSS."""
    import re
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ratings.parquet"
        make_data(n_questions).to_parquet(path, index=False)
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "irtpeer", "score", str(path),
               "--penalty", str(penalty), "--device", device, "--out", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", res.stderr).group(1))
    return {"wall_s": wall, "peak_rss_gb": rss / 1e6}


def run_sklearn(n_questions: int, penalty: float) -> dict:
    import resource

    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    df = make_data(n_questions)
    t0 = time.perf_counter()
    cols, offset = [], 0
    for c in ["model", "question", "judge", "item"]:
        codes = df[c].cat.codes.to_numpy().astype(np.int64)
        cols.append(codes + offset)
        offset += len(df[c].cat.categories)
    n = len(df)
    rows = np.repeat(np.arange(n), 4)
    colidx = np.stack(cols, 1).ravel()
    sign = np.tile([1.0, -1.0, -1.0, -1.0], n)
    X = sp.csr_matrix((sign, (rows, colidx)), shape=(n, offset))
    y = df["score"].to_numpy()
    t1 = time.perf_counter()
    lr = LogisticRegression(C=1.0 / penalty, fit_intercept=False, solver="lbfgs", tol=1e-8,
                            max_iter=10000).fit(X, y)
    t2 = time.perf_counter()
    eta = X @ lr.coef_.ravel()
    obj = float(-(y * eta - np.logaddexp(0, eta)).sum() + 0.5 * penalty * (lr.coef_ ** 2).sum())
    return {
        "design_s": t1 - t0,
        "fit_s": t2 - t1,
        "objective": obj,
        "iterations": int(lr.n_iter_[0]),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
        "n": n,
    }


def in_subprocess(kind: str, n_questions: int, penalty: float, device: str) -> dict:
    here = str(__import__("pathlib").Path(__file__).parent)
    extra = f", {device!r}" if kind == "irtpeer" else ""
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); import bench_calibration as b; "
        f"print(json.dumps(b.run_{kind}({n_questions:d}, {penalty!r}{extra})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, nargs="+", default=[5000],
                    help="questions (x 20 models x 4 judges x 3 items); 5000 = 1.2 M, 62500 = 15 M")
    ap.add_argument("--penalty", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--skip-cli", action="store_true", help="skip the end-to-end `irtpeer score`")
    args = ap.parse_args(argv)
    print(f"{'ratings':>12} {'estimator':>22} {'fit s':>8} {'peak GB':>8} {'iters':>6} {'objective':>18}")
    for nq in args.questions:
        ours = in_subprocess("irtpeer", nq, args.penalty, args.device)
        print(f"{ours['n']:>12,} {'irtpeer torch (+SEs)':>22} {ours['fit_s']:>8.2f} {ours['peak_rss_gb']:>8.2f} "
              f"{ours['iterations']:>6} {ours['objective']:>18.6f}   (load {ours['load_s']:.2f} s)", flush=True)
        if not args.skip_cli:
            e2e = run_cli(nq, args.penalty, args.device)
            print(f"{ours['n']:>12,} {'irtpeer score, end to end':>22} {e2e['wall_s']:>8.2f} "
                  f"{e2e['peak_rss_gb']:>8.2f}   (import, load, fit with SEs, outputs)", flush=True)
        if args.skip_sklearn:
            continue
        sk = in_subprocess("sklearn", nq, args.penalty, args.device)
        print(f"{sk['n']:>12,} {'sklearn lbfgs sparse':>22} {sk['fit_s']:>8.2f} {sk['peak_rss_gb']:>8.2f} "
              f"{sk['iterations']:>6} {sk['objective']:>18.6f}   (design {sk['design_s']:.2f} s)", flush=True)
        print(f"{'':>12} {'speed-up':>22} {sk['fit_s'] / ours['fit_s']:>8.1f}x   objective gap "
              f"(sklearn - irtpeer) {sk['objective'] - ours['objective']:.3e}", flush=True)
        if not args.skip_cli:
            print(f"{'':>12} {'end to end / sklearn fit':>22} {e2e['wall_s'] / sk['fit_s']:>8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
