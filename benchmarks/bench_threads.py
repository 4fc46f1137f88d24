"""`irtpeer score` on HANNA with and without another process busy on a core.

Issue 12, item 1: with torch's default threads, a fit on a 2-core machine where another process
holds a core was 10-25x slower and bimodal. irtpeer now chooses threads by the size of the work
(one thread for small designs) and makes OpenMP threads wait passively. This prints, side by side,
the end-to-end CLI time of each setting a user could pick, on a quiet machine and beside a
CPU-bound process (a Python busy loop), over several repeats.

    python benchmarks/bench_threads.py [--data PATH] [--repeats 5]

Goal: beside a busy process, irtpeer's default is at most 1.25x the `OMP_NUM_THREADS=1` time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hanna_long.csv"

# what a user could run: irtpeer's default, one thread forced by the environment, and torch's
# default thread count with spinning waits (what irtpeer did before)
SETTINGS = {
    "irtpeer default": ({}, []),
    "OMP_NUM_THREADS=1": ({"OMP_NUM_THREADS": "1"}, []),
    "2 threads, spinning": ({"OMP_WAIT_POLICY": "ACTIVE"}, ["--threads", "2"]),
}


def fit_seconds(data: Path, env_extra: dict, args: list[str]) -> float:
    env = {**os.environ, **env_extra}
    code = (
        "import sys, time, irtpeer\n"
        "from irtpeer.cli import main\n"
        "t = time.perf_counter()\n"
        "main(['score', sys.argv[1], '--score', 'score_rounded', '--json', *sys.argv[2:]])\n"
        "print(time.perf_counter() - t, file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(data), *args], env=env,
                         capture_output=True, text=True, check=True, timeout=600)
    return float(res.stderr.strip().splitlines()[-1])


def busy_process() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"data {args.data}; {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    print(f"{'setting':<22} {'quiet median s':>15} {'busy median s':>14} {'busy max s':>11}")
    medians = {}
    for name, (env, extra) in SETTINGS.items():
        quiet = [fit_seconds(args.data, env, extra) for _ in range(args.repeats)]
        hog = busy_process()
        try:
            time.sleep(0.5)
            busy = [fit_seconds(args.data, env, extra) for _ in range(args.repeats)]
        finally:
            hog.kill()
            hog.wait()
        medians[name] = statistics.median(busy)
        print(f"{name:<22} {statistics.median(quiet):>15.3f} {medians[name]:>14.3f} "
              f"{max(busy):>11.3f}")
    ratio = medians["irtpeer default"] / medians["OMP_NUM_THREADS=1"]
    print(f"busy core: irtpeer default / OMP_NUM_THREADS=1 = {ratio:.2f} (goal <= 1.25)")


if __name__ == "__main__":
    main()
