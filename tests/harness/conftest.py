"""Shared fixtures of the harness tests: a real OpenAI-compatible server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
import pytest

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAIServer  # noqa: E402

TEST_KEY = "sk-irtpeer-TEST-9f8e7d6c5b4a3210zyxw"


@pytest.fixture
def server():
    srv = FakeOpenAIServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("IRTPEER_TEST_KEY", TEST_KEY)
    return "IRTPEER_TEST_KEY"


def make_answers(n_questions: int = 4, models=("m1", "m2"), dimensions=None) -> pd.DataFrame:
    rows = []
    for m in models:
        for q in range(n_questions):
            rows.append({"model": m, "question": f"q{q}", "prompt": f"PROMPT-Q{q} please help",
                         "answer": f"ANSWER-{m}-Q{q}", **({"dimensions": dimensions} if dimensions is not None else {})})
    return pd.DataFrame(rows)


@pytest.fixture
def answers_file(tmp_path):
    p = tmp_path / "answers.parquet"
    make_answers().to_parquet(p)
    return p


def run_cli(argv: list[str]) -> int:
    from irtpeer.cli import main

    return main([str(a) for a in argv])
