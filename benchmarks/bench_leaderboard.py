"""Leaderboard-shaped IRT: models x benchmark items, binary, cells missing at random.

`irtpeer score` is run the way a user runs it (a subprocess on a parquet file; wall time and the
child's peak resident memory), and the same data go through scikit-learn's
LogisticRegression (lbfgs) on a sparse one-hot design at the sizes it can finish: with
``--penalty 1`` both fit the same ridge objective (``C = 1``, no intercept), so the objective gap
is meaningful. Parameter recovery against the simulated truth is reported for the exact MLE
(penalty 0): the correlation of the model measures with the truth and the coverage of their 95 %
intervals (``se``, exact, from the dense Schur complement).

    python benchmarks/bench_leaderboard.py --models 2000 --items 5000             # 7 M responses
    python benchmarks/bench_leaderboard.py --models 6000 --items 30000 --skip-sklearn   # 126 M
    python benchmarks/bench_leaderboard.py --models 11785 --items 36259 --missing 0 \
        --skip-sklearn --skip-ridge --max-rss-gb 18                                   # 427 M
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(models: int, items: int, missing: float, seed: int, path: Path):
    """Write the responses (model, question, score) to parquet; return the true parameters.

    Rows are made and written a block of models at a time (one parquet row group each), so
    memory stays one block (~20 M responses) whatever the size: the 427 M-response complete
    matrix is written without ever holding it. Labels are dictionary-encoded (categoricals).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    theta, b = rng.normal(0, 1, models), rng.normal(0, 1, items)
    mdict = pa.array([f"m{i:05d}" for i in range(models)])
    qdict = pa.array([f"q{i:06d}" for i in range(items)])
    mtype = np.int16 if models <= np.iinfo(np.int16).max else np.int32
    qtype = np.int16 if items <= np.iinfo(np.int16).max else np.int32
    n = 0
    step = max(1, 20_000_000 // items)
    writer = None
    try:
        for s in range(0, models, step):
            keep = rng.random((min(step, models - s), items)) >= missing
            m, q = np.nonzero(keep)
            del keep
            m = (m + s).astype(mtype)
            q = q.astype(qtype)
            p = 1.0 / (1.0 + np.exp(-(theta[m] - b[q])))
            y = (rng.random(len(m)) < p).astype(np.int8)
            del p
            table = pa.table({
                "model": pa.DictionaryArray.from_arrays(pa.array(m), mdict),
                "question": pa.DictionaryArray.from_arrays(pa.array(q), qdict),
                "score": pa.array(y),
            })
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            n += len(y)
    finally:
        if writer is not None:
            writer.close()
    return theta, b, n


def _rss_gb(pid: int) -> float:
    """Resident memory of a running process (GB), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1e6
    except OSError:
        pass
    return 0.0


def run_cli(path: Path, out: Path, *flags: str, max_rss_gb: float | None = None) -> dict:
    """`irtpeer score --progress` end to end in a subprocess: wall seconds, peak RSS (GB, the
    child's ru_maxrss) and the stages: the resident memory sampled every 0.1 s, its peak between
    two progress lines (the first stage, up to Newton's first line, is import, load, design,
    start values and engine; the last is the outputs). With ``max_rss_gb`` the run is killed when
    its resident memory passes that (a shared machine is protected), and the error says so."""
    cmd = [sys.executable, "-m", "irtpeer", "score", str(path), "--out", str(out), "--progress",
           *flags]
    log = out.parent / "irtpeer_score.log"
    with open(log, "w+") as fh, open(log) as reader:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        killed, seen, rss = False, 0.0, 0.0
        stages, stage = [], {"until": "iteration 0", "start": 0.0, "peak_gb": 0.0}
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            now = time.perf_counter() - t0
            for line in reader:  # progress lines close a stage
                if line.startswith("[irtpeer] "):
                    stages.append(dict(stage, until=line[10:].strip(), seconds=now - stage["start"]))
                    stage = {"until": "", "start": now, "peak_gb": rss}
            if pid:
                break
            rss = _rss_gb(proc.pid)
            seen = max(seen, rss)
            stage["peak_gb"] = max(stage["peak_gb"], rss)
            if max_rss_gb is not None and seen > max_rss_gb and not killed:
                proc.kill()
                killed = True
            time.sleep(0.1)
        wall = time.perf_counter() - t0
        fh.seek(0)
        text = fh.read()
    stages.append(dict(stage, until="exit (outputs written)", seconds=wall - stage["start"]))
    peak = usage.ru_maxrss / 1e6
    if killed:
        raise RuntimeError(f"stopped at {wall:.0f} s: resident memory passed {max_rss_gb} GB")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(text[-3000:])
    return {"wall_s": wall, "peak_gb": peak, "stages": stages}


def print_stages(run: dict, n: int):
    """The stages of a run: seconds, peak resident GB and bytes per response."""
    for st in run["stages"]:
        print(f"    {st['seconds']:7.1f} s  peak {st['peak_gb']:6.2f} GB "
              f"({st['peak_gb'] * 1e9 / n:5.1f} B/response)  until: {st['until'][:70]}")


def recovery(out: Path, theta: np.ndarray, b: np.ndarray) -> dict:
    """Correlation with the truth and 95 % coverage of the model intervals, in the reported
    identification (questions sum to zero, so the truth is shifted by the mean difficulty)."""
    import pandas as pd

    meas = pd.read_csv(out / "measures.csv")
    mod = meas[meas["facet"] == "model"]
    idx = mod["element"].str[1:].astype(int).to_numpy()
    true = theta[idx] - b.mean()
    est, se = mod["measure"].to_numpy(), mod["se"].to_numpy()
    status = mod["status"].astype(object).where(mod["status"].notna(), "")
    ok = np.isfinite(est) & np.isfinite(se) & (status == "").to_numpy()
    q = meas[meas["facet"] == "question"]
    qidx = q["element"].str[1:].astype(int).to_numpy()
    conv = pd.read_csv(out / "convergence.csv").iloc[0]
    return {
        "corr_models": float(np.corrcoef(est[ok], true[ok])[0, 1]),
        "coverage_95": float(np.mean(np.abs(est[ok] - true[ok]) <= 1.959964 * se[ok])),
        "corr_items": float(np.corrcoef(q["measure"], b[qidx] - b.mean())[0, 1]),
        "iterations": int(conv["iterations"]),
        "cg_products": int(conv.get("cg_products", 0)),
        "fit_s": float(conv["seconds"]),
        "objective": float(conv["objective"]),
        "se_method": str(conv.get("se_method", "")),
    }


def run_sklearn(path: Path, penalty: float) -> dict:
    """scikit-learn's lbfgs on the sparse one-hot design (model +1, question -1), in-process."""
    import pandas as pd
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    df = pd.read_parquet(path)
    m = df["model"].cat.codes.to_numpy().astype(np.int64)
    q = df["question"].cat.codes.to_numpy().astype(np.int64)
    M = len(df["model"].cat.categories)
    n = len(df)
    rows = np.repeat(np.arange(n), 2)
    cols = np.stack([m, q + M], 1).ravel()
    sign = np.tile([1.0, -1.0], n)
    X = sp.csr_matrix((sign, (rows, cols)), shape=(n, M + len(df["question"].cat.categories)))
    y = df["score"].to_numpy()
    t0 = time.perf_counter()
    lr = LogisticRegression(C=1.0 / penalty, fit_intercept=False, solver="lbfgs", tol=1e-8,
                            max_iter=10000).fit(X, y)
    fit_s = time.perf_counter() - t0
    eta = X @ lr.coef_.ravel()
    obj = float(-(y * eta - np.logaddexp(0, eta)).sum() + 0.5 * penalty * (lr.coef_**2).sum())
    return {"fit_s": fit_s, "objective": obj, "iterations": int(lr.n_iter_[0])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=2000)
    ap.add_argument("--items", type=int, default=5000)
    ap.add_argument("--missing", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("--skip-ridge", action="store_true", help="skip the penalty-1 irtpeer run")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each irtpeer fit (best kept)")
    ap.add_argument("--max-rss-gb", type=float, default=None,
                    help="kill `irtpeer score` when its resident memory passes this many GB")
    ap.add_argument("--tmp", default=None, help="folder for the parquet file and outputs")
    args = ap.parse_args(argv)
    if args.tmp is not None:
        try:
            Path(args.tmp).mkdir(parents=True, exist_ok=True)  # a new folder, as a user names it
        except OSError as exc:
            ap.error(f"--tmp {args.tmp!r}: {exc.strerror}; name a folder that can be made")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        tmp = Path(tmp)
        path = tmp / "leaderboard.parquet"
        t0 = time.perf_counter()
        theta, b, n = make_data(args.models, args.items, args.missing, args.seed, path)
        print(f"{args.models} models x {args.items} items, {args.missing:.0%} missing: "
              f"{n:,} responses (made in {time.perf_counter() - t0:.1f} s)", flush=True)
        report = {"models": args.models, "items": args.items, "responses": n}

        def best(*flags):
            runs = [run_cli(path, tmp / "out", *flags, max_rss_gb=args.max_rss_gb)
                    for _ in range(args.repeat)]
            return min(runs, key=lambda r: r["wall_s"])

        mle = best("--penalty", "0", "--se-facets", "model")
        mle.update(recovery(tmp / "out", theta, b))
        report["irtpeer_mle"] = mle
        print(f"  irtpeer score (MLE, model se): {mle['wall_s']:.1f} s end to end "
              f"(fit {mle['fit_s']:.1f} s, {mle['iterations']} Newton iterations, "
              f"{mle['cg_products']} CG products), peak {mle['peak_gb']:.2f} GB; "
              f"corr(models, truth) {mle['corr_models']:.4f}, 95% coverage "
              f"{mle['coverage_95']:.3f}, corr(items) {mle['corr_items']:.4f}", flush=True)
        print_stages(mle, n)
        if not args.skip_ridge:
            ridge = best("--penalty", "1", "--se-facets", "model")
            ridge.update(recovery(tmp / "out", theta, b))
            report["irtpeer_ridge"] = ridge
            print(f"  irtpeer score (penalty 1): {ridge['wall_s']:.1f} s end to end "
                  f"(fit {ridge['fit_s']:.1f} s), peak {ridge['peak_gb']:.2f} GB, "
                  f"objective {ridge['objective']:.6f}", flush=True)
        if not args.skip_sklearn:
            sk = run_sklearn(path, 1.0)
            report["sklearn"] = sk
            print(f"  sklearn lbfgs (C=1): fit {sk['fit_s']:.1f} s, {sk['iterations']} "
                  f"iterations, objective {sk['objective']:.6f}", flush=True)
            if not args.skip_ridge:
                print(f"  irtpeer end to end / sklearn fit: "
                      f"{report['irtpeer_ridge']['wall_s'] / sk['fit_s']:.2f}; objective gap "
                      f"(sklearn - irtpeer) {sk['objective'] - report['irtpeer_ridge']['objective']:.3e}")
        print(json.dumps(report))


if __name__ == "__main__":
    main()
