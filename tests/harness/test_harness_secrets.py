"""The API key never appears in any output file, log line or exception message."""

from __future__ import annotations

import os
import subprocess
import sys

from fake_openai import FakeOpenAIServer
from harness_support import TEST_KEY, make_answers


def _run(tmp_path, url, key, *extra, debug_logs=True):
    env = dict(os.environ, IRTPEER_TEST_KEY=key, NO_PROXY="127.0.0.1,localhost")
    if debug_logs:
        env["OPENAI_LOG"] = "debug"  # the openai client's own debug logging, the chattiest setting
    ap = tmp_path / "answers.parquet"
    if not ap.exists():
        make_answers(3, models=("m1",), dimensions="A,T").to_parquet(ap)
    cmd = [
        sys.executable,
        "-m",
        "irtpeer",
        "judge",
        str(ap),
        "--base-url",
        url,
        "--judge",
        "judge-a",
        "--out",
        str(tmp_path / "ratings.parquet"),
        "--api-key-env",
        "IRTPEER_TEST_KEY",
        "--backoff-base",
        "0.01",
        "--progress",
        *extra,
    ]
    return subprocess.run(
        check=False, args=cmd, env=env, capture_output=True, text=True, timeout=120
    )


def _assert_nowhere(tmp_path, proc, key):
    fragments = [key, key[3:], key[-12:], key[:12]]
    for f in fragments:
        assert f not in proc.stdout and f not in proc.stderr, f"key fragment {f!r} in the output"
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files
    for p in files:
        data = p.read_bytes()
        for f in fragments:
            assert f.encode() not in data, f"key fragment {f!r} in {p.name}"


def test_key_is_used_but_never_written(tmp_path):
    with FakeOpenAIServer(api_key=TEST_KEY) as srv:
        srv.add_fault("status", match="PROMPT-Q1 ", status=500)
        srv.add_fault("missing", match="PROMPT-Q2 ", times=2)
        proc = _run(tmp_path, srv.url, TEST_KEY)
        assert proc.returncode == 0, proc.stderr
        assert all(r["auth"] == f"Bearer {TEST_KEY}" for r in srv.requests), (
            "the key was really sent"
        )
    assert (tmp_path / "ratings.parquet").exists() and (tmp_path / "ratings.manifest.json").exists()
    assert (
        "IRTPEER_TEST_KEY" in (tmp_path / "ratings.manifest.json").read_text()
    )  # the name, not the value
    _assert_nowhere(tmp_path, proc, TEST_KEY)


def test_401_that_echoes_the_key_is_fatal_counted_and_redacted(tmp_path):
    wrong = "sk-WRONG-abcdef0123456789ABCDEFghij"
    with FakeOpenAIServer(
        api_key=TEST_KEY
    ) as srv:  # answers 401 "Incorrect API key provided: <key>"
        proc = _run(tmp_path, srv.url, wrong)
        assert srv.count == 1, "a 401 is fatal: no retries, no further calls"
    assert proc.returncode == 2
    assert "HTTP 401" in proc.stderr and "IRTPEER_TEST_KEY" in proc.stderr
    assert "Traceback" not in proc.stderr
    import json

    m = json.loads((tmp_path / "ratings.manifest.json").read_text())
    assert m["status"] == "aborted" and m["counts"]["fatal_http_401"] == 1
    assert not (tmp_path / "ratings.parquet").exists()
    _assert_nowhere(tmp_path, proc, wrong)


def test_redact_removes_keys_and_masked_fragments():
    from irtpeer.harness.errors import redact, register_secret

    secret = "sk-proj-QWERTYUIOP1234567890asdfgh"
    register_secret(secret)
    assert secret not in redact(f"bad key {secret}")
    assert "QWERTYUIOP12" not in redact("Incorrect API key provided: sk-proj-****QWERTYUIOP12****")
    assert "[redacted]" in redact("Authorization: Bearer abc.def")
