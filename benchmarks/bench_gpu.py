"""CUDA vs CPU fit of irtpeer's torch estimator on ~2 M simulated ratings (issue 13, items 7-8).

For each device the fit runs in its own subprocess, so that its peak resident memory (ru_maxrss)
is its own: data are simulated with :func:`irtpeer.simulate` (20 models, 4 judges, the persona
rubric's 4 dimensions x 3 items, no missing scores; the number of questions sets the size),
loaded, then fitted with ``TorchMFRM(device=...)``. On CUDA a small fit runs first, so that
context creation and kernel loading are not counted in the fit time (they are reported as
``cuda_warmup_s``). Per device it records:

* ``fit_s`` — wall seconds of ``TorchMFRM.fit`` (measures, SEs, covariances);
* ``cuda_peak_gb`` — ``torch.cuda.max_memory_allocated`` during the fit (CUDA only);
* ``rss_before_fit_gb`` / ``peak_rss_gb`` — process RSS after loading the data / peak RSS during
  the fit (Linux's VmHWM, reset before the fit; where it cannot be reset, the process's peak);
* ``bytes_per_obs`` — fit memory per observation: GPU peak allocation (CUDA) or the rise of the
  peak RSS above the RSS before the fit (CPU, and ``host_bytes_per_obs`` on CUDA);
* ``iterations`` and ``objective`` per dimension.

Then the CUDA measures are compared with the CPU ones (``max_abs_diff_measure``, largest relative
SE difference, equal iteration counts) and both with the simulation's truth (correlation).

    python benchmarks/bench_gpu.py --out gpu_check_out/bench_gpu.json         # ~2 M ratings
    python benchmarks/bench_gpu.py --cpu-only --ratings 20000 --out /tmp/b.json  # no GPU needed

The JSON goes to ``--out`` (written atomically) and a short table to stdout. Exit status 1 when the
CUDA fit disagrees with the CPU fit beyond 1e-9 (measures) / 1e-8 relative (SEs) or a fit failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this checkout's irtpeer, also where it is not installed (a bare GPU machine)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS, JUDGES, DIMENSIONS, ITEMS = 20, 4, ("A", "T", "E", "C"), 3
PER_QUESTION = MODELS * JUDGES * len(DIMENSIONS) * ITEMS  # ratings per question
MEASURE_ATOL, SE_RTOL = 1e-9, 1e-8  # issue 13, item 8


def simulate(n_ratings: int, seed: int = 0):
    import irtpeer

    questions = max(2, round(n_ratings / PER_QUESTION))
    return irtpeer.simulate(
        models=MODELS, questions=questions, judges=JUDGES, dimensions=DIMENSIONS,
        items_per_dimension=ITEMS, missing=0.0, seed=seed,
    )


def _status_gb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in GB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1e3 / 1e9  # kB
    raise KeyError(field)


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) so that it measures the fit alone (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def fit_one(device: str, n_ratings: int, measures_out: Path) -> dict:
    """Run in a subprocess: simulate, load, fit on ``device``; measures go to ``measures_out``."""
    import resource

    import torch

    import irtpeer
    from irtpeer.estimators._torch import TorchMFRM

    info: dict = {"device": device}
    if device == "cuda":
        t0 = time.perf_counter()
        small = irtpeer.load_ratings(irtpeer.simulate(models=4, questions=20, judges=2).ratings)
        TorchMFRM(device="cuda").fit(small)
        torch.cuda.synchronize()
        info["cuda_warmup_s"] = time.perf_counter() - t0
        info["gpu_name"] = torch.cuda.get_device_name(0)
    sim = simulate(n_ratings)
    ratings = irtpeer.load_ratings(sim.ratings)
    n = len(sim.ratings)
    del sim
    rss0 = _status_gb("VmRSS")
    reset = _reset_peak_rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    cal = TorchMFRM(device=device).fit(ratings).calibration_
    if device == "cuda":
        torch.cuda.synchronize()
    info["fit_s"] = time.perf_counter() - t0
    if reset:
        peak_rss, info["peak_rss_of"] = _status_gb("VmHWM"), "the fit (VmHWM reset before it)"
    else:  # KB -> GB on Linux; includes simulating and loading the data
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        info["peak_rss_of"] = "the whole process (ru_maxrss)"
    info.update(n=n, rss_before_fit_gb=rss0, peak_rss_gb=peak_rss)
    host_bpo = max(0.0, peak_rss - rss0) * 1e9 / n
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base_alloc
        info.update(cuda_peak_gb=peak / 1e9, bytes_per_obs=peak / n, host_bytes_per_obs=host_bpo)
    else:
        info["bytes_per_obs"] = host_bpo
    conv = cal.convergence
    info["iterations"] = {str(d): int(i) for d, i in zip(conv["dimension"], conv["iterations"])}
    info["objective"] = {str(d): float(o) for d, o in zip(conv["dimension"], conv["objective"])}
    cal.measures.to_csv(measures_out, index=False)
    return info


def _run_child(device: str, n_ratings: int, tmp: Path) -> dict:
    out = tmp / f"measures_{device}.csv"
    cmd = [sys.executable, __file__, "--child", device, "--ratings", str(n_ratings),
           "--measures", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-5:]
        return {"device": device, "error": " | ".join(tail) or f"exit {res.returncode}"}
    info = json.loads(res.stdout.strip().splitlines()[-1])
    info["measures_csv"] = str(out)
    return info


def compare(cpu: dict, gpu: dict) -> dict:
    """CUDA vs CPU: largest measure difference, largest relative SE difference, iterations."""
    import numpy as np
    import pandas as pd

    key = ["dimension", "facet", "element"]
    a = pd.read_csv(cpu["measures_csv"]).set_index(key)
    b = pd.read_csv(gpu["measures_csv"]).set_index(key).loc[a.index]
    ok_se = np.isfinite(a["se"]) & np.isfinite(b["se"])
    rel_se = (np.abs(b["se"] - a["se"]) / np.abs(a["se"]))[ok_se]
    out = {
        "max_abs_diff_measure": float(np.max(np.abs(b["measure"] - a["measure"]))),
        "max_rel_diff_se": float(rel_se.max()) if len(rel_se) else None,
        "same_iterations": cpu["iterations"] == gpu["iterations"],
    }
    out["agree"] = bool(
        out["max_abs_diff_measure"] <= MEASURE_ATOL
        and (out["max_rel_diff_se"] is None or out["max_rel_diff_se"] <= SE_RTOL)
        and out["same_iterations"]
    )
    return out


def recovery(info: dict, truth) -> float:
    """Correlation of the estimated with the true measures (all facets and dimensions)."""
    import numpy as np
    import pandas as pd

    key = ["dimension", "facet", "element"]
    est = pd.read_csv(info["measures_csv"]).merge(truth, on=key, suffixes=("", "_true"))
    return float(np.corrcoef(est["measure"], est["measure_true"])[0, 1])


def run(n_ratings: int, cpu_only: bool) -> dict:
    import torch

    result: dict = {
        "ratings_requested": n_ratings,
        "design": f"{MODELS} models x Q questions x {JUDGES} judges x {len(DIMENSIONS)} "
        f"dimensions x {ITEMS} items, binary, no missing",
        "torch": torch.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    truth = simulate(n_ratings).truth
    with tempfile.TemporaryDirectory() as tmp:
        devices = ["cpu"] if cpu_only else ["cpu", "cuda"]
        for d in devices:
            result[d] = _run_child(d, n_ratings, Path(tmp))
            if "error" not in result[d]:
                result[d]["recovery_corr"] = recovery(result[d], truth)
        if not cpu_only and all("error" not in result[d] for d in devices):
            result["cuda_vs_cpu"] = compare(result["cpu"], result["cuda"])
            result["speedup"] = result["cpu"]["fit_s"] / result["cuda"]["fit_s"]
        for d in devices:
            result[d].pop("measures_csv", None)
    failed = [d for d in result if isinstance(result[d], dict) and "error" in result[d]]
    agree = result.get("cuda_vs_cpu", {}).get("agree", True)
    result["passed"] = not failed and agree
    return result


def print_table(r: dict) -> None:
    print(f"{'device':<6} {'n':>10} {'fit s':>8} {'bytes/obs':>10} {'peak RSS GB':>12} "
          f"{'GPU peak GB':>12} {'recovery r':>11}")
    for d in ("cpu", "cuda"):
        x = r.get(d)
        if not x:
            continue
        if "error" in x:
            print(f"{d:<6} FAILED: {x['error']}")
            continue
        gpu = f"{x['cuda_peak_gb']:.3f}" if "cuda_peak_gb" in x else "-"
        print(f"{d:<6} {x['n']:>10,} {x['fit_s']:>8.2f} {x['bytes_per_obs']:>10.1f} "
              f"{x['peak_rss_gb']:>12.2f} {gpu:>12} {x['recovery_corr']:>11.4f}")
    if "cuda_vs_cpu" in r:
        c = r["cuda_vs_cpu"]
        print(f"CUDA vs CPU: max |measure diff| {c['max_abs_diff_measure']:.2e}, max SE rel diff "
              f"{c['max_rel_diff_se']:.2e}, same iterations {c['same_iterations']}, "
              f"speed-up {r['speedup']:.1f}x")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=2_000_000, help="about this many ratings")
    ap.add_argument("--cpu-only", action="store_true", help="fit on the CPU only (no GPU needed)")
    ap.add_argument("--out", type=Path, help="write the figures to this JSON file")
    ap.add_argument("--child", choices=["cpu", "cuda"], help=argparse.SUPPRESS)
    ap.add_argument("--measures", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(fit_one(args.child, args.ratings, args.measures)))
        return 0
    if not args.cpu_only:
        import torch

        if not torch.cuda.is_available():
            print("bench_gpu: no CUDA device visible; use --cpu-only to run the CPU part alone",
                  file=sys.stderr)
            return 2
    r = run(args.ratings, args.cpu_only)
    print_table(r)
    if args.out:
        from irtpeer._io import atomic_write_json

        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(r, args.out)
    return 0 if r["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
