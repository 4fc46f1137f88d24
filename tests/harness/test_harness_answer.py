"""The answer stage (OpenAI-compatible and local transformers backends) and `irtpeer run CONFIG`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from harness_support import run_cli

from irtpeer.harness.backend import ChatRequest, Sampling
from irtpeer.harness.manifest import RunStats


def _questions(tmp_path, n=3):
    q = pd.DataFrame(
        {
            "question": [f"q{i}" for i in range(n)],
            "prompt": [f"PROMPT-Q{i} please help" for i in range(n)],
            "dimensions": ["A,T"] * n,
            "topic": ["x"] * n,
        }
    )
    p = tmp_path / "questions.csv"
    q.to_csv(p, index=False)
    return p


def test_answer_cli_against_server_and_resume(tmp_path, server, api_key):
    qp = _questions(tmp_path)
    out = tmp_path / "answers.parquet"
    argv = [
        "answer",
        qp,
        "--base-url",
        server.url,
        "--model",
        "eval-1",
        "--model",
        "eval-2",
        "--out",
        out,
        "--api-key-env",
        api_key,
        "--system",
        "Be brief.",
        "--temperature",
        "0.7",
        "--seed",
        "3",
        "--no-progress",
    ]
    assert run_cli(argv) == 0
    a = pd.read_parquet(out)
    assert len(a) == 6 and set(a["model"]) == {"eval-1", "eval-2"}
    assert a["answer"].str.contains("An answer to: PROMPT-Q").all()
    assert (
        (a["status"] == "ok").all() and list(a["dimensions"].unique()) == ["A,T"] and "topic" in a
    )
    body = server.requests[0]["body"]
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["temperature"] == 0.7 and body["seed"] == 3 and "response_format" not in body
    assert run_cli(argv) == 0 and server.count == 6  # second run: all from the store
    argv[argv.index("0.7")] = "0.5"  # a changed sampling setting is a different call
    assert run_cli(argv) == 0 and server.count == 12


def test_transformers_backend_generates_and_reports_usage(tiny_chat_model):
    from irtpeer.harness.transformers_backend import TransformersBackend

    b = TransformersBackend(str(tiny_chat_model), batch_size=2)
    reqs = [
        ChatRequest.make([{"role": "user", "content": p}], Sampling(max_tokens=5))
        for p in ["hello please help", "the answer is yes", "one two three"]
    ]
    stats = RunStats()
    out = b.chat_batch(reqs, stats)
    assert len(out) == 3 and stats.counts["requests_sent"] == 3
    for r in out:
        assert isinstance(r.text, str)
        assert 1 <= r.completion_tokens <= 5 and r.prompt_tokens > 3
        assert r.finish_reason in ("stop", "length")
    # greedy decoding is deterministic and batching does not change the result
    again = TransformersBackend(str(tiny_chat_model), batch_size=1).chat_batch(reqs, RunStats())
    assert [r.text for r in again] == [r.text for r in out]


def test_run_config_answers_with_a_local_checkpoint_and_judges_with_a_server(
    tmp_path, server, api_key, tiny_chat_model
):
    qp = _questions(tmp_path, 2)
    cfg = tmp_path / "eval.toml"
    cfg.write_text(f"""
[answer]
questions = "{qp.name}"
out = "answers.parquet"
sampling = {{ max_tokens = 6 }}
[[answer.models]]
label = "tiny-local"
backend = "transformers"
model = "{tiny_chat_model}"
[[answer.models]]
label = "served"
base_url = "{server.url}"
model = "eval-1"
api_key_env = "{api_key}"

[judge]
rubric = "persona"
out = "ratings.parquet"
[[judge.judges]]
base_url = "{server.url}"
model = "judge-x"
api_key_env = "{api_key}"
price_input_per_mtok = 1.0
price_output_per_mtok = 2.0
""")
    assert run_cli(["run", cfg, "--no-progress"]) == 0
    a = pd.read_parquet(tmp_path / "answers.parquet")
    r = pd.read_parquet(tmp_path / "ratings.parquet")
    assert set(a["model"]) == {"tiny-local", "served"}
    # 2 models x 2 questions x 2 active dimensions x 3 items
    assert len(r) == 24 and set(r["dimension"]) == {"A", "T"} and r["score"].notna().all()
    m = json.loads((tmp_path / "ratings.manifest.json").read_text())
    assert m["cost"]["estimated_usd"] > 0
    assert m["rubrics"][0]["id"] == "persona" and len(m["rubrics"][0]["hash"]) == 64
    am = json.loads((tmp_path / "answers.manifest.json").read_text())
    assert am["counts"]["calls_done"] == 4
    n = server.count
    assert (
        run_cli(["run", cfg, "--no-progress"]) == 0 and server.count == n
    )  # resumed: nothing re-sent


def test_config_errors_name_the_key(tmp_path):
    from irtpeer.harness.config import load_config
    from irtpeer.harness.errors import ConfigError

    p = tmp_path / "c.yaml"
    p.write_text("judge:\n  out: r.parquet\n  judgez: []\n")
    with pytest.raises(ConfigError, match="judgez"):
        load_config(p)
