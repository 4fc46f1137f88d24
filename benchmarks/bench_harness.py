"""Judge-harness throughput: judge calls per second against a local OpenAI-compatible server with
simulated latency, at several concurrency levels, beside the naive alternative (a sequential loop
with the same `openai` client).

    python benchmarks/bench_harness.py [--latency 0.05] [--levels 8,32,128] [--calls 3000]

The server runs in its own process (so the harness's CPU time is measured alone, in this process).
Reported per level: calls/s (wall), harness CPU ms per call (process CPU time of this process:
the openai client, validation, the store, the table), and the speed-up over the sequential loop.
Goal (issue #3): >= 300 calls/s at concurrency 128 on 2 cores, < 2 ms CPU per call.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "harness"))
os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ.setdefault("BENCH_KEY", "EMPTY")


def _answers(n: int):
    import pandas as pd

    return pd.DataFrame(
        {
            "model": ["m1"] * n,
            "question": [f"q{i}" for i in range(n)],
            "prompt": [f"Question {i}: is my plan sound?" for i in range(n)],
            "answer": [f"Answer {i}: it depends; verify first." for i in range(n)],
            "dimensions": ["A"] * n,
        }
    )


def harness_run(url: str, n_calls: int, concurrency: int, store: Path) -> tuple[float, float]:
    from irtpeer.harness.endpoints import make_backends
    from irtpeer.harness.judge import judge_answers
    from irtpeer.harness.rubrics import load_rubric

    judges = make_backends(
        [
            {
                "base_url": url,
                "model": "judge",
                "api_key_env": "BENCH_KEY",
                "concurrency": concurrency,
            }
        ],
        "judge",
    )
    answers = _answers(n_calls)
    rubric = load_rubric("persona")
    c0, t0 = time.process_time(), time.perf_counter()
    res = judge_answers(
        answers, judges, rubric, store_path=store, out=store.with_suffix(".parquet"), progress=False
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert (
        res.manifest["counts"].get("calls_done", 0) + res.manifest["counts"].get("calls_cached", 0)
        == n_calls
    )
    assert res.table["score"].notna().all()
    return wall, cpu


def sequential_run(url: str, n_calls: int) -> tuple[float, float]:
    """The naive alternative: a plain loop, one request after another, parse, keep in a list."""
    import json

    import openai

    from irtpeer.harness.rubrics import load_rubric, validate_reply

    client = openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)
    rubric = load_rubric("persona")
    dim = rubric.dimension("A")
    rows = _answers(n_calls).to_dict("records")
    c0, t0 = time.process_time(), time.perf_counter()
    out = []
    for row in rows:
        resp = client.chat.completions.create(
            model="judge", messages=rubric.messages(dim, row), temperature=0, max_tokens=256
        )
        out.append(validate_reply(rubric, dim, resp.choices[0].message.content)[0])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert all(o is not None for o in out), json.dumps(out[:3])
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--levels", default="8,32,128")
    ap.add_argument(
        "--calls", type=int, default=3000, help="calls per level (fewer at low concurrency)"
    )
    ap.add_argument("--sequential-calls", type=int, default=60)
    args = ap.parse_args()

    from fake_openai import serve_forever

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    srv = ctx.Process(target=serve_forever, args=(q, args.latency), daemon=True)
    srv.start()
    url = f"http://127.0.0.1:{q.get(timeout=30)}/v1"
    try:
        harness_run(
            url, 20, 4, Path(tempfile.mkdtemp()) / "warm.calls.jsonl"
        )  # imports, connections
        print(
            f"server latency {args.latency * 1000:.0f} ms, {os.cpu_count()} CPU cores, server in its own process\n"
        )
        sw, sc = sequential_run(url, args.sequential_calls)
        seq_rate = args.sequential_calls / sw
        print(
            f"{'method':<28}{'calls':>7}{'wall s':>9}{'calls/s':>10}{'CPU ms/call':>13}{'speed-up':>10}"
        )
        print(
            f"{'sequential loop (naive)':<28}{args.sequential_calls:>7}{sw:>9.2f}{seq_rate:>10.1f}"
            f"{1000 * sc / args.sequential_calls:>13.2f}{1.0:>10.1f}"
        )
        for c in [int(x) for x in args.levels.split(",")]:
            n = min(args.calls, max(200, int(c / args.latency * 2)))
            store = Path(tempfile.mkdtemp()) / "bench.calls.jsonl"
            wall, cpu = harness_run(url, n, c, store)
            print(
                f"{'irtpeer judge, conc. ' + str(c):<28}{n:>7}{wall:>9.2f}{n / wall:>10.1f}{1000 * cpu / n:>13.2f}"
                f"{(n / wall) / seq_rate:>10.1f}"
            )
            wall2, cpu2 = harness_run(url, n, c, store)  # rerun: everything from the store
            print(
                f"{'  rerun (all from store)':<28}{n:>7}{wall2:>9.2f}{n / wall2:>10.1f}{1000 * cpu2 / n:>13.2f}{'':>10}"
            )
    finally:
        srv.terminate()


if __name__ == "__main__":
    main()
