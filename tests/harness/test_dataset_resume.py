"""kill -9 in the middle of a real `irtpeer dataset build` process, then the same command again:
no stored call is sent again, none is lost, and the result equals an uninterrupted build's (the
same config and seed give the same instances from the same server replies)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from dataset_fake import DatasetFakeServer
from dataset_support import write_config
from harness_support import TEST_KEY, run_cli


def _cmd(cfg, out):
    return [sys.executable, "-m", "irtpeer", "dataset", "build", str(cfg), "--out", str(out),
            "--no-progress"]  # fmt: skip


def _lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _keys(path):
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def test_sigkill_then_rerun_repeats_no_stored_call_and_matches_a_clean_build(tmp_path, monkeypatch):
    monkeypatch.setenv("IRTPEER_TEST_KEY", TEST_KEY)
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost")
    plants = {"bad_attribution": {"AT-0001"}, "two_dim": {("TE-0002", "E")}}
    with DatasetFakeServer(delay=0.01, **plants) as srv:
        cfg = write_config(tmp_path, srv.url, counts=(4, 4, 3, 2))
        clean = tmp_path / "clean"
        assert run_cli(_cmd(cfg, clean)[3:]) == 0  # an uninterrupted build, for comparison
        n_calls = _lines(clean / "calls.jsonl")
        start = len(srv.requests)

        out = tmp_path / "killed"
        store = out / "calls.jsonl"
        proc = subprocess.Popen(
            _cmd(cfg, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 60
        while _lines(store) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        assert proc.poll() is None, f"the build ended before it was killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (out / "instances.jsonl").exists(), "a killed build writes no final files"
        stored = _lines(store)
        assert 40 <= stored < n_calls
        in_flight = len(srv.requests) - start - stored
        assert 0 <= in_flight <= 4  # one server, concurrency 4: at most 4 requests were lost

        done = subprocess.run(
            _cmd(cfg, out), check=False, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        m = json.loads((out / "manifest.json").read_text())
        assert m["counts"]["store_records_at_start"] == stored
        assert m["counts"]["calls_done"] == n_calls - stored
        fps = [json.dumps(r["body"], sort_keys=True) for r in srv.requests[start:]]
        assert len(fps) - len(set(fps)) == in_flight  # only the lost in-flight ones were re-sent
        assert len(set(fps)) == n_calls

    assert sorted(_keys(store)) == sorted(_keys(clean / "calls.jsonl"))  # no call lost
    for name in ("instances.jsonl", "review.csv"):
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
    recs = [json.loads(x) for x in (out / "instances.jsonl").read_text().splitlines()]
    assert {r["id"]: r["regenerations"] for r in recs}["AT-0001"] == {"attribution": 1}
