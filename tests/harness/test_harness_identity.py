"""Judgment identity (issue 12, item 9): every model's answer is judged by its own call, keyed by
(model, question, judge, rubric, replicate) as well as the content; identical calls within a run
are sent once, whatever the timing; the store still resumes."""

from __future__ import annotations

import asyncio
import json

import pandas as pd
from harness_support import make_answers, run_cli

from irtpeer.harness.backend import ChatRequest, Sampling
from irtpeer.harness.endpoints import make_backends
from irtpeer.harness.executor import CallUnit, run_units
from irtpeer.harness.manifest import RunStats
from irtpeer.harness.store import CallStore


def _same_answers(n_questions: int) -> pd.DataFrame:
    """Two models that gave the very same answer to every question."""
    a = make_answers(n_questions, models=("m1", "m2"), dimensions="A,E")
    a["answer"] = [f"SAME-ANSWER-Q{q}" for q in a["question"].str[1:]]
    return a


def _judge(tmp_path, server, api_key, answers, *extra):
    ap = tmp_path / "answers.parquet"
    answers.to_parquet(ap)
    out = tmp_path / "ratings.parquet"
    code = run_cli(
        ["judge", ap, "--base-url", server.url, "--judge", "judge-a", "--out", out]
        + ["--api-key-env", api_key, "--no-progress", "--concurrency", "8", *extra]
    )
    m = json.loads((tmp_path / "ratings.manifest.json").read_text())
    return code, pd.read_parquet(out), m


def test_two_models_with_the_same_answer_are_judged_independently(tmp_path, server, api_key):
    answers = _same_answers(6)
    code, r, m = _judge(tmp_path, server, api_key, answers, "--temperature", "0.7")
    assert code == 0
    n_calls = 2 * 6 * 2  # models x questions x dimensions
    # every model's answer got its own request, not a copy of the other model's judgment
    assert server.count == n_calls
    c = m["counts"]
    assert c["calls_planned"] == c["calls_done"] == n_calls and c.get("calls_cached", 0) == 0
    per_call = r.drop_duplicates("call_id")
    assert len(per_call) == n_calls
    ids = per_call.pivot_table(
        index=["question", "dimension"], columns="model", values="call_id", aggfunc="first"
    )
    assert (ids["m1"] != ids["m2"]).all(), "a judgment was shared between two models"
    # the same command again: everything from the store, nothing sent
    code, r2, m2 = _judge(tmp_path, server, api_key, answers, "--temperature", "0.7")
    assert code == 0 and server.count == n_calls
    assert m2["counts"]["calls_cached"] == n_calls
    assert r2["call_id"].tolist() == r["call_id"].tolist()


def test_the_judge_label_is_part_of_the_identity(tmp_path, server, api_key):
    """Two judge labels on the same served model are two judges: each judges every answer."""
    from irtpeer.harness.judge import judge_answers
    from irtpeer.harness.rubrics import load_rubric

    spec = {"base_url": server.url, "model": "judge-x", "api_key_env": api_key}
    judges = make_backends([{**spec, "label": "j1"}, {**spec, "label": "j2"}], "judge")
    answers = make_answers(3, models=("m1",), dimensions="C")
    res = judge_answers(
        answers, judges, load_rubric("persona"), store_path=tmp_path / "s.jsonl", progress=False
    )
    assert server.count == 2 * 3
    assert res.table.groupby("judge")["call_id"].nunique().to_dict() == {"j1": 3, "j2": 3}


def test_answers_are_keyed_by_model_label_and_question(tmp_path, server, api_key):
    q = tmp_path / "q.csv"
    pd.DataFrame({"question": ["q1", "q2"], "prompt": ["SAME PROMPT", "SAME PROMPT"]}).to_csv(
        q, index=False
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"answer:\n  questions: q.csv\n  out: a.parquet\n  models:\n"
        f"    - {{label: base, base_url: '{server.url}', model: eval, api_key_env: {api_key}}}\n"
        f"    - {{label: again, base_url: '{server.url}', model: eval, api_key_env: {api_key}}}\n"
    )
    assert run_cli(["run", cfg, "--no-progress"]) == 0
    a = pd.read_parquet(tmp_path / "a.parquet")
    assert server.count == 4 and a["call_id"].nunique() == 4


def test_identical_calls_in_one_run_are_sent_once(tmp_path, server, api_key):
    """The executor coalesces units whose keys are equal: one request, every unit gets the reply,
    and the counts do not depend on which finished first."""
    backends = make_backends(
        [{"base_url": server.url, "model": "m", "api_key_env": api_key, "concurrency": 8}],
        "model",
    )
    req = ChatRequest.make([{"role": "user", "content": "PROMPT-X"}], Sampling(max_tokens=8))
    units = [CallUnit("m", req, {"stage": "test"}) for _ in range(5)]
    units.append(CallUnit("m", req, {"stage": "test", "replicate": 1}))
    stats = RunStats()
    with CallStore(tmp_path / "s.jsonl") as store:
        asyncio.run(run_units(units, backends, store, stats))
    assert server.count == 2
    assert stats.counts["calls_done"] == 2 and stats.counts["calls_coalesced"] == 4
    assert all(u.status == "ok" and u.value == units[0].value for u in units)
    assert len({u.call_id for u in units[:5]}) == 1 and units[5].call_id != units[0].call_id


def test_a_repeated_dimension_is_judged_once(tmp_path, server, api_key):
    code, r, _ = _judge(
        tmp_path, server, api_key, make_answers(2, models=("m1",), dimensions="A,A")
    )
    assert code == 0 and server.count == 2
    assert not r.duplicated(["model", "question", "judge", "item"]).any()
