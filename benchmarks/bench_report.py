"""Time and size of the HTML report for a large design (issue 8: < 20 s, < 5 MB).

20 models x 5,000 questions x 4 judges x 3 items (1.2 M simulated binary judgments, one
dimension by default). The fit is timed apart; the report time is ``write_report`` with every
analysis (fit statistics, facet summary, bias, stability, judge count, ...), the figures and the
file. Question-level plots are distributions, and tables longer than ``--max-rows`` show their
extremes only, so the file stays small.

    python benchmarks/bench_report.py                      # the issue's design
    python benchmarks/bench_report.py --dimensions A,T,E,C # 4.8 M judgments, Peer and Dignity
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--questions", type=int, default=5000)
    ap.add_argument("--judges", type=int, default=4)
    ap.add_argument("--items", type=int, default=3, help="items per dimension")
    ap.add_argument("--dimensions", default="A")
    ap.add_argument("--out", default=None, help="keep the report here (default: a temp file)")
    args = ap.parse_args()

    import logging

    import irtpeer
    from irtpeer.report import write_report

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("irtpeer.report").setLevel(logging.INFO)  # seconds per section

    t0 = time.perf_counter()
    sim = irtpeer.simulate(models=args.models, questions=args.questions, judges=args.judges,
                           dimensions=args.dimensions, items_per_dimension=args.items,
                           missing=0.0, seed=0)
    ratings = irtpeer.load_ratings(sim.ratings)
    t_data = time.perf_counter() - t0
    est = irtpeer.TorchMFRM(irtpeer.ModelSpec())
    t0 = time.perf_counter()
    cal = est.fit(ratings).calibration_
    t_fit = time.perf_counter() - t0

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp()) / "report.html"
    c0, t0 = time.process_time(), time.perf_counter()
    write_report(cal, ratings, out, estimator=est)
    t_report, cpu_report = time.perf_counter() - t0, time.process_time() - c0
    size = out.stat().st_size
    html = out.read_text(encoding="utf-8")
    result = {
        "judgments": len(ratings.data),
        "design": f"{args.models} models x {args.questions} questions x {args.judges} judges x "
                  f"{args.items} items x {len(args.dimensions.split(','))} dimension(s)",
        "data_s": round(t_data, 2),
        "fit_s": round(t_fit, 2),
        "report_s": round(t_report, 2),
        "report_cpu_s": round(cpu_report, 2),
        "report_mb": round(size / 1e6, 2),
        "figures": html.count("<img "),
        "sections_with_notes": html.count('class="note unavailable"'),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cpus": os.cpu_count(),
        "within_budget": t_report < 20 and size < 5e6,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        print(f"report: {out}")


if __name__ == "__main__":
    main()
