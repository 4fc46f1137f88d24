"""The judge stage against a real HTTP server through the real openai client: fault injection,
validation, re-asks, null scores, manifest counts."""

from __future__ import annotations

import json

import pandas as pd
from harness_support import make_answers, run_cli

from irtpeer.harness.rubrics import load_rubric


def _judge(tmp_path, server, api_key, answers, *extra):
    ap = tmp_path / "answers.parquet"
    answers.to_parquet(ap)
    out = tmp_path / "ratings.parquet"
    code = run_cli(
        [
            "judge",
            ap,
            "--base-url",
            server.url,
            "--judge",
            "judge-a",
            "--rubric",
            "persona",
            "--out",
            out,
            "--api-key-env",
            api_key,
            "--backoff-base",
            "0.01",
            "--no-progress",
            *extra,
        ]
    )
    manifest = json.loads((tmp_path / "ratings.manifest.json").read_text())
    return code, (pd.read_parquet(out) if out.exists() else None), manifest


def test_clean_run_has_one_row_per_item_and_the_design_columns(tmp_path, server, api_key):
    answers = make_answers(3, dimensions="A,T")
    code, r, m = _judge(tmp_path, server, api_key, answers, "--judge", "judge-b")
    assert code == 0
    for col in [
        "model",
        "question",
        "judge",
        "item",
        "dimension",
        "score",
        "raw",
        "parse_status",
        "call_id",
        "prompt_tokens",
        "completion_tokens",
        "rubric_id",
        "rubric_version",
        "rubric_hash",
    ]:
        assert col in r.columns
    # 2 models x 3 questions x 2 judges x 2 dimensions x 3 items
    assert len(r) == 72
    assert not r.duplicated(["model", "question", "judge", "item"]).any()
    assert set(r["dimension"]) == {"A", "T"} and set(r["judge"]) == {"judge-a", "judge-b"}
    assert r["score"].notna().all() and set(r["score"].unique()) <= {0, 1}
    assert (r["rubric_hash"] == load_rubric("persona").hash).all()
    assert m["counts"]["requests_sent"] == 24 and m["counts"]["calls_done"] == 24
    # the server got structured-output requests with exactly the dimension's keys
    rf = server.requests[0]["body"]["response_format"]
    assert rf["type"] == "json_schema" and set(rf["json_schema"]["schema"]["required"]) in (
        {"A1", "A2", "A3"},
        {"T1", "T2", "T3"},
    )
    # scores are the server's, not made up: compare with the server's deterministic rule
    from fake_openai import score_for

    row = r[
        (r.model == "m1") & (r.question == "q0") & (r.judge == "judge-a") & (r.item == "T2")
    ].iloc[0]
    req = next(
        x["body"]
        for x in server.requests
        if x["body"]["model"] == "judge-a"
        and "ANSWER-m1-Q0" in x["body"]["messages"][-1]["content"]
        and "T1" in x["body"]["messages"][-1]["content"]
    )
    user = next(mm["content"] for mm in req["messages"] if mm["role"] == "user")
    assert row["score"] == score_for(user + "judge-a", "T2")


def test_injected_faults_behave_as_specified_and_are_counted(tmp_path, server, api_key):
    answers = make_answers(8, models=("m1",), dimensions="A")
    server.add_fault("status", match="PROMPT-Q1 ", status=429, headers={"Retry-After": "1"})
    server.add_fault("status", match="PROMPT-Q2 ", status=500)
    server.add_fault("timeout", match="PROMPT-Q3 ", delay=2.0)
    server.add_fault("malformed", match="PROMPT-Q4 ")  # fixed by the re-ask
    server.add_fault("missing", match="PROMPT-Q5 ", times=2)  # re-ask fails too -> null scores
    server.add_fault("extra", match="PROMPT-Q6 ")  # fixed by the re-ask
    server.add_fault("notjson", match="PROMPT-Q7 ")  # 200 with a non-JSON body: retried
    code, r, m = _judge(tmp_path, server, api_key, answers, "--timeout", "0.5")
    assert code == 0, "invalid judgments are results (null scores), not failures of the run"
    c = m["counts"]
    assert c["retry_http_429"] == 1 and c["retry_http_500"] == 1 and c["retry_timeout"] == 1
    assert c["retry_bad_body"] == 1
    assert c["reasks"] == 3 and c["judgments_invalid"] == 1 and c["judgments_ok_after_reask"] == 2
    assert c["requests_sent"] == server.count == 8 + 4 + 3  # 8 calls, 4 retries, 3 re-asks
    by_q = r.groupby("question")["parse_status"].first()
    assert by_q["q4"] == by_q["q6"] == "ok_after_reask"
    assert by_q["q5"] == "invalid"
    for q in ["q0", "q1", "q2", "q3", "q7"]:
        assert by_q[q] == "ok"
    q5 = r[r.question == "q5"]
    assert q5["score"].isna().all(), "a reply that fails validation twice must be null, never 0"
    assert q5["reason"].str.contains("missing keys").all()
    assert q5["raw"].notna().all() and q5["raw_reask"].notna().all(), (
        "raw judge text is always kept"
    )
    assert r.loc[r.question != "q5", "score"].notna().all()
    assert "unexpected keys ['Z9']" in r.loc[r.question == "q6", "reason"].iloc[0]
    # Retry-After: 1 was honoured before the retry of q1
    times = [x["t"] for x in server.requests if "PROMPT-Q1 " in json.dumps(x["body"])]
    assert len(times) == 2 and times[1] - times[0] >= 0.95


def test_400_fails_one_call_and_a_rerun_retries_only_it(tmp_path, server, api_key):
    answers = make_answers(3, models=("m1",), dimensions="E")
    server.add_fault(
        "status", match="PROMPT-Q1 ", status=400, body={"error": {"message": "context too long"}}
    )
    code, r, m = _judge(tmp_path, server, api_key, answers)
    assert code == 1  # incomplete: the user is told to rerun
    assert m["status"] == "incomplete" and m["counts"]["failed_http_400"] == 1
    q1 = r[r.question == "q1"]
    assert (q1["parse_status"] == "failed").all() and q1["score"].isna().all()
    assert q1["reason"].str.contains("http_400").all()
    assert server.count == 3
    code, r, m = _judge(tmp_path, server, api_key, answers)
    assert code == 0 and r["score"].notna().all()
    assert server.count == 4, "only the failed call is sent again"
    assert m["counts"]["calls_cached"] == 2 and m["counts"]["calls_done"] == 1


def test_retries_exhausted_gives_null_not_zero(tmp_path, server, api_key):
    answers = make_answers(2, models=("m1",), dimensions="C")
    server.add_fault("status", match="PROMPT-Q0 ", status=503, times=10)
    code, r, m = _judge(tmp_path, server, api_key, answers, "--max-retries", "2")
    assert code == 1
    q0 = r[r.question == "q0"]
    assert q0["score"].isna().all() and (q0["parse_status"] == "failed").all()
    assert m["counts"]["retry_http_503"] == 2 and m["counts"]["failed_http_503"] == 1
    assert server.count == 3 + 1


def test_quota_exhausted_stops_the_run_without_retrying(tmp_path, server, api_key, capsys):
    answers = make_answers(1, models=("m1",), dimensions="A")
    server.add_fault("quota", times=5)
    code, r, m = _judge(tmp_path, server, api_key, answers)
    assert code == 2 and r is None
    assert "quota" in capsys.readouterr().err
    assert m["status"] == "aborted" and m["counts"]["fatal_quota"] == 1
    assert server.count == 1


def test_only_active_dimensions_are_judged(tmp_path, server, api_key):
    answers = make_answers(2, models=("m1",))
    answers["dimensions"] = [["E", "A"], ["C"]]
    code, r, _ = _judge(tmp_path, server, api_key, answers)
    assert code == 0
    assert set(r[r.question == "q0"]["dimension"]) == {"E", "A"}
    assert set(r[r.question == "q1"]["dimension"]) == {"C"}


def test_fenced_json_is_accepted_and_truncation_is_not(tmp_path, server, api_key):
    answers = make_answers(2, models=("m1",), dimensions="T")
    server.add_fault("fenced", match="PROMPT-Q0 ")
    server.add_fault("length", match="PROMPT-Q1 ", times=2)
    _, r, _ = _judge(tmp_path, server, api_key, answers)
    assert (r[r.question == "q0"]["parse_status"] == "ok").all()
    q1 = r[r.question == "q1"]
    assert q1["score"].isna().all() and q1["reason"].str.contains("truncated").all()


def test_user_errors_are_messages_not_tracebacks(tmp_path, server, api_key, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"model": ["m"], "question": ["q"], "answer": ["a"]}).to_csv(bad, index=False)
    code = run_cli(
        [
            "judge",
            bad,
            "--base-url",
            server.url,
            "--judge",
            "j",
            "--out",
            tmp_path / "o.parquet",
            "--api-key-env",
            api_key,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "prompt" in err and "Traceback" not in err
    code = run_cli(
        [
            "judge",
            bad,
            "--base-url",
            server.url,
            "--judge",
            "j",
            "--out",
            tmp_path / "o.parquet",
            "--api-key-env",
            "IRTPEER_SURELY_UNSET_VAR",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "IRTPEER_SURELY_UNSET_VAR" in err
    ap = tmp_path / "a.parquet"
    make_answers(1, dimensions="A").to_parquet(ap)
    code = run_cli(
        [
            "judge",
            ap,
            "--base-url",
            server.url,
            "--judge",
            "j",
            "--rubric",
            tmp_path / "nope.toml",
            "--out",
            tmp_path / "o.parquet",
            "--api-key-env",
            api_key,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "nope.toml" in err and "built-in" in err
    make_answers(1, dimensions="A,Z").to_parquet(ap)
    code = run_cli(
        [
            "judge",
            ap,
            "--base-url",
            server.url,
            "--judge",
            "j",
            "--out",
            tmp_path / "o.parquet",
            "--api-key-env",
            api_key,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "'Z'" in err and "dimensions" in err
    assert server.count == 0


def test_ratings_table_is_accepted_by_the_calibration_loader(tmp_path, server, api_key):
    from irtpeer.ratings import load_ratings

    answers = make_answers(4, dimensions="A,E")
    server.add_fault("missing", match="ANSWER-m2-Q3", times=4)  # both dimensions, first reply and re-ask
    code, r, _ = _judge(tmp_path, server, api_key, answers, "--judge", "judge-b", "--no-reask")
    assert code == 0
    assert r["score"].isna().sum() == 2 * 2 * 3  # m2/q3: 2 judges x 2 dimensions x 3 items, no re-ask
    ratings = load_ratings(tmp_path / "ratings.parquet")
    assert ratings.facets == ["question", "judge", "item"] and ratings.dimensions == ["A", "E"]
    assert len(ratings) == len(r) - r["score"].isna().sum()  # nulls are missing data, never zeros
