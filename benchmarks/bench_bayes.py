"""Wall time and convergence of the Bayesian estimator on a paper-scale dimension.

One dimension of the paper's design: 5 models x 1,000 questions x 2 judges x 3 items (30,000
binary ratings), person mode ``hierarchical`` (theta_mq = theta_m + u_mq, 5,000 random response
effects), 4 chains x 1,000 draws after the estimator's default tuning (500 steps with nutpie, 1,000
with PyMC; ``--tune`` sets it). The same PyMC model is sampled by nutpie (irtpeer's default) and
by PyMC's own NUTS sampler; ``leapfrog_steps`` (gradient evaluations, tuning included) is the
sampling cost free of the machine's load. Each run is its own subprocess, so its
wall time includes importing, building the cells, compiling the model, sampling and summarising
(everything ``irtpeer score --estimator bayes`` does).

    python benchmarks/bench_bayes.py                       # both samplers
    python benchmarks/bench_bayes.py --samplers nutpie     # irtpeer's default only
    python benchmarks/bench_bayes.py --questions 200 --draws 300   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
t0, c0 = time.perf_counter(), time.process_time()
import irtpeer
from irtpeer import ModelSpec
from irtpeer.estimators import get_estimator
a = json.loads(sys.argv[1])
sim = irtpeer.simulate(models=5, questions=a["questions"], judges=2, dimensions="A",
                       items_per_dimension=3, categories=2, missing=0.0, response_sd=0.5, seed=0)
ratings = irtpeer.load_ratings(sim.ratings)
est = get_estimator("bayes")(ModelSpec(person_mode="hierarchical"), draws=a["draws"],
                             tune=a["tune"], chains=a["chains"], seed=1, sampler=a["sampler"])
cal = est.fit(ratings).calibration_
row = cal.convergence.iloc[0].to_dict()
m = cal.measures.merge(sim.truth, on=["dimension", "facet", "element"], suffixes=("", "_true"))
inside = ((m["hdi_low"] <= m["measure_true"]) & (m["measure_true"] <= m["hdi_high"])).mean()
out = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
import resource
kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # PyMC samples chains in subprocesses
out.update(wall_s=time.perf_counter() - t0,
           cpu_s=time.process_time() - c0 + kids.ru_utime + kids.ru_stime, ratings=int(len(sim.ratings)),
           hdi95_coverage=float(inside))
print("RESULT " + json.dumps(out))
"""


def run(sampler: str, args) -> dict:
    payload = json.dumps({"sampler": sampler, "questions": args.questions, "draws": args.draws,
                          "tune": args.tune, "chains": args.chains})
    proc = subprocess.run([sys.executable, "-c", CHILD, payload], capture_output=True, text=True,
                          check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{sampler} run failed:\n{proc.stderr[-3000:]}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=1000)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--tune", type=int, default=None,
                   help="tuning steps per chain (default: the estimator's, 500 nutpie / 1000 PyMC)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--samplers", default="nutpie,pymc")
    args = p.parse_args(argv)
    keys = ["wall_s", "cpu_s", "compile_s", "sample_s", "leapfrog_steps", "r_hat_max", "ess_bulk_min", "ess_tail_min", "divergences",
            "tree_depth_max", "sigma_theta", "sigma_u", "hdi95_coverage", "n_cells", "ratings"]
    print("sampler  " + "  ".join(f"{k:>14}" for k in keys), flush=True)
    for sampler in args.samplers.split(","):
        r = run(sampler, args)
        vals = [r.get(k, float("nan")) for k in keys]
        print(f"{sampler:8} " + "  ".join(
            f"{v:14.3f}" if isinstance(v, float) else f"{v!s:>14}" for v in vals), flush=True)


if __name__ == "__main__":
    main()
