"""scripts/gpu_check.sh (issue 13) run as a user runs it, on a machine without a GPU.

* Without CUDA it says so in one line, writes nothing and exits 2 within seconds, so a GPU lease
  is not wasted on a machine whose torch cannot see the card.
* Its CPU dry run (``GPU_CHECK_CPU_DRY_RUN=1``, the bench with ``--cpu-only`` on a tiny size)
  goes through the step runner and the summary: the bench's figures reach summary.json and
  summary.md, vLLM is reported as skipped when it is not installed, and a failing step makes the
  exit status 1 while the other steps still run.
* The CUDA half of benchmarks/bench_gpu.py (the CPU/CUDA comparison and the CUDA row), fed by
  hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _run(out: Path, **env) -> tuple[subprocess.CompletedProcess, float]:
    e = {**os.environ, "PYTHON": sys.executable, **env}
    e.pop("OUT", None)
    t0 = time.perf_counter()
    res = subprocess.run(
        ["bash", str(SCRIPT), str(out)],
        env=e,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return res, time.perf_counter() - t0


def test_without_cuda_one_line_and_exit_2_within_seconds(tmp_path):
    res, seconds = _run(tmp_path / "out", CUDA_VISIBLE_DEVICES="")
    assert res.returncode == 2, res.stderr
    lines = (res.stdout + res.stderr).strip().splitlines()
    assert len(lines) == 1 and "no CUDA device visible" in lines[0] and "Traceback" not in lines[0]
    assert seconds < 20
    assert not (tmp_path / "out").exists()  # nothing that looks like a result


def test_cpu_dry_run_writes_the_summary_and_a_failed_step_sets_the_exit_status(tmp_path):
    out = tmp_path / "out"
    res, _ = _run(
        out, GPU_CHECK_CPU_DRY_RUN="1", GPU_CHECK_STEPS="bench_gpu,vllm", GPU_CHECK_RATINGS="20000"
    )
    vllm_here = importlib.util.find_spec("vllm") is not None
    assert res.returncode == (1 if vllm_here else 0), res.stdout + res.stderr
    s = json.loads((out / "summary.json").read_text())
    steps = {x["name"]: x for x in s["steps"]}
    assert list(steps) == ["bench_gpu", "vllm"]
    import numpy

    assert s["machine"]["packages"]["numpy"] == numpy.__version__  # what the machine has
    assert ("vllm" in s["machine"]["missing_packages"]) is not vllm_here
    bench = steps["bench_gpu"]
    assert bench["status"] == "passed" and bench["seconds"] > 0
    cpu = bench["figures"]["cpu"]
    assert 19_000 <= cpu["n"] <= 21_000 and cpu["fit_s"] > 0 and cpu["bytes_per_obs"] > 0
    assert cpu["recovery_corr"] > 0.95 and set(cpu["iterations"]) == {"A", "T", "E", "C"}
    assert json.loads((out / "bench_gpu.json").read_text())["cpu"]["n"] == cpu["n"]
    md = (out / "summary.md").read_text()
    assert f"| cpu | {cpu['n']:,} |" in md and "| bench_gpu | passed |" in md
    if not vllm_here:
        assert steps["vllm"]["status"] == "skipped"
        assert "vllm not installed: skipped" in res.stdout
        assert "Overall: PASSED" in md

    # a step that fails (here the bench, given a size that is not a number) fails the check,
    # and the step after it still runs
    out2 = tmp_path / "out2"
    res, _ = _run(
        out2, GPU_CHECK_CPU_DRY_RUN="1", GPU_CHECK_STEPS="bench_gpu,vllm", GPU_CHECK_RATINGS="lots"
    )
    assert res.returncode == 1
    s = json.loads((out2 / "summary.json").read_text())
    steps = {x["name"]: x for x in s["steps"]}
    assert steps["bench_gpu"]["status"] == "failed" and steps["bench_gpu"]["rc"] == 2
    assert "vllm" in steps and s["passed"] is False
    assert "invalid int value: 'lots'" in (out2 / "gpu_check.log").read_text()
    assert "Overall: FAILED" in (out2 / "summary.md").read_text()


def test_bench_gpu_compares_devices_and_prints_the_cuda_row(tmp_path, capsys):
    """The CUDA half of bench_gpu.py, fed by hand (no GPU here): agreement within the issue's
    tolerances passes, a difference beyond them or another iteration count fails."""
    import importlib.util as u

    import pandas as pd

    spec = u.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    bench = u.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = {
        "dimension": ["A"] * 3,
        "facet": ["model", "model", "judge"],
        "element": ["m1", "m2", "j1"],
        "measure": [0.5, -0.5, 0.1],
        "se": [0.1, 0.2, float("nan")],
    }
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame(rows).to_csv(a, index=False)
    near = dict(rows, measure=[0.5 + 5e-10, -0.5, 0.1], se=[0.1 * (1 + 5e-9), 0.2, float("nan")])
    pd.DataFrame(near).iloc[::-1].to_csv(b, index=False)  # another row order
    cpu = {"measures_csv": str(a), "iterations": {"A": 4}}
    gpu = {"measures_csv": str(b), "iterations": {"A": 4}}
    c = bench.compare(cpu, gpu)
    assert c["agree"] and abs(c["max_abs_diff_measure"] - 5e-10) < 1e-12
    assert abs(c["max_rel_diff_se"] - 5e-9) < 1e-12
    assert not bench.compare(cpu, {**gpu, "iterations": {"A": 5}})["agree"]
    pd.DataFrame(dict(rows, measure=[0.5 + 1e-8, -0.5, 0.1])).to_csv(b, index=False)
    assert not bench.compare(cpu, gpu)["agree"]

    x = {
        "n": 2_000_000,
        "fit_s": 1.5,
        "bytes_per_obs": 96.0,
        "peak_rss_gb": 1.2,
        "recovery_corr": 0.98,
    }
    bench.print_table(
        {
            "cpu": x,
            "cuda": {**x, "fit_s": 0.3, "cuda_peak_gb": 0.25},
            "cuda_vs_cpu": c,
            "speedup": 5.0,
        }
    )
    out = capsys.readouterr().out
    assert "cuda    2,000,000     0.30" in out and "speed-up 5.0x" in out
