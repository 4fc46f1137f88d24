"""kill -9 in the middle of a real `irtpeer judge` process, then the same command again: every
(answer, judge, dimension) appears exactly once and no finished call is sent again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
from fake_openai import FakeOpenAIServer
from harness_support import TEST_KEY, make_answers


def _cmd(ap, out, url):
    return [
        sys.executable,
        "-m",
        "irtpeer",
        "judge",
        str(ap),
        "--base-url",
        url,
        "--judge",
        "judge-a",
        "--judge",
        "judge-b",
        "--rubric",
        "persona",
        "--out",
        str(out),
        "--concurrency",
        "4",
        "--api-key-env",
        "IRTPEER_TEST_KEY",
        "--no-progress",
    ]


def _lines(path):
    if not path.exists():
        return 0
    return path.read_bytes().count(b"\n")


def test_sigkill_then_rerun_completes_without_repeating_finished_calls(tmp_path):
    env = dict(os.environ, IRTPEER_TEST_KEY=TEST_KEY, NO_PROXY="127.0.0.1,localhost")
    answers = make_answers(
        20, models=("m1", "m2"), dimensions="A,E"
    )  # 40 answers x 2 judges x 2 dims
    n_calls = 40 * 2 * 2
    ap = tmp_path / "answers.parquet"
    answers.to_parquet(ap)
    out = tmp_path / "ratings.parquet"
    store = tmp_path / "ratings.calls.jsonl"
    with FakeOpenAIServer(delay=0.02) as srv:
        proc = subprocess.Popen(
            _cmd(ap, out, srv.url), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while _lines(store) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run finished before it could be killed: {proc.communicate()}"
        )
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert not out.exists(), "no final table from a killed run"
        finished = _lines(store)
        assert 40 <= finished < n_calls
        sent_first = srv.count
        in_flight = sent_first - finished
        assert 0 <= in_flight <= 4  # at most `concurrency` requests were in flight at the kill

        done = subprocess.run(
            check=False,
            args=_cmd(ap, out, srv.url),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        m = json.loads((tmp_path / "ratings.manifest.json").read_text())
        assert m["counts"]["calls_cached"] == finished
        assert m["counts"]["calls_done"] == n_calls - finished
        sent_second = srv.count - sent_first
        # exactly the calls not finished before the kill were sent, each once
        assert sent_second == n_calls - finished
        fps = srv.fingerprints()
        assert len(set(fps)) == n_calls
        assert len(fps) - len(set(fps)) == in_flight  # only the lost in-flight ones were sent twice

        # a third run of the same command sends nothing at all
        before = srv.count
        third = subprocess.run(
            check=False,
            args=_cmd(ap, out, srv.url),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert third.returncode == 0, third.stderr
        assert srv.count == before

    r = pd.read_parquet(out)
    counts = r.groupby(["model", "question", "judge", "dimension"]).size()
    assert len(counts) == n_calls and (counts == 3).all()  # each call once, three items each
    assert r["score"].notna().all()
    assert r["call_id"].nunique() == n_calls
    assert _lines(store) == n_calls
