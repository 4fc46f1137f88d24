"""What a new user meets first (issue 12, items 6-8): an unreachable endpoint, config values of the
wrong type, table errors that name the file. Each runs the CLI as a user types it and asserts a
one-line message (no traceback) that names the URL, key or file."""

from __future__ import annotations

import json
import socket
import time

import pandas as pd
from harness_support import make_answers, run_cli


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    return port


def _one_line_error(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one line, got {lines}"
    return lines[0]


def _questions(tmp_path, n=3) -> str:
    p = tmp_path / "questions.csv"
    pd.DataFrame(
        {"question": [f"q{i}" for i in range(n)], "prompt": [f"PROMPT-Q{i}" for i in range(n)]}
    ).to_csv(p, index=False)
    return p


# ---- item 6: unreachable endpoint ----------------------------------------------------------------
def test_unreachable_endpoint_fails_within_seconds_naming_the_url(tmp_path, api_key, capsys):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    qp = _questions(tmp_path, 30)
    out = tmp_path / "answers.parquet"
    t0 = time.monotonic()
    code = run_cli(
        ["answer", qp, "--base-url", url, "--model", "m1", "--model", "m2", "--model", "m3"]
        + ["--out", out, "--api-key-env", api_key, "--no-progress"]  # default retries and backoff
    )
    elapsed = time.monotonic() - t0
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2
    assert elapsed < 10, f"took {elapsed:.1f} s to notice that nothing listens at {url}"
    assert url in line and "connect" in line.lower()
    assert not out.exists()
    m = json.loads((tmp_path / "answers.manifest.json").read_text())
    assert m["status"] == "aborted" and m["counts"]["fatal_connection"] >= 1
    # one canary per model, each tried a few times: not 30 x 3 x (retries + 1) requests
    assert m["counts"]["requests_sent"] <= 3 * 3


def test_server_that_goes_away_after_the_canary_only_fails_calls(tmp_path, server, api_key):
    """A connection error after the endpoint answered once is transient (retried, then a failed
    call): the canary rule does not turn a blip in a long run into an abort."""
    server.add_fault("drop", match="PROMPT-Q2", times=10)  # connection closed, no reply
    qp = _questions(tmp_path, 3)
    out = tmp_path / "answers.parquet"
    code = run_cli(
        ["answer", qp, "--base-url", server.url, "--model", "m1", "--out", out]
        + ["--api-key-env", api_key, "--no-progress", "--max-retries", "1"]
        + ["--backoff-base", "0.01", "--concurrency", "1"]
    )
    assert code == 1
    a = pd.read_parquet(out)
    assert list(a["status"]) == ["ok", "ok", "failed"]
    assert "connection" in a["reason"].iloc[2]


# ---- item 7: config validated up front -----------------------------------------------------------
def _config(tmp_path, server_url, api_key, answer_model_extra="", judge_extra="", judge_top=""):
    qp = _questions(tmp_path, 2)
    p = tmp_path / "eval.toml"
    p.write_text(f"""
[answer]
questions = "{qp.name}"
out = "answers.parquet"
[[answer.models]]
base_url = "{server_url}"
model = "eval-1"
api_key_env = "{api_key}"
{answer_model_extra}

[judge]
out = "ratings.parquet"
{judge_top}
[[judge.judges]]
base_url = "{server_url}"
model = "judge-1"
api_key_env = "{api_key}"
{judge_extra}
""")
    return p


def test_config_values_of_the_wrong_type_name_the_key(tmp_path, server, api_key, capsys):
    cases = [
        ("", 'concurrency = "lots"', "", ["judge.judges[0].concurrency", "'lots'"]),
        ('timeout = "soon"', "", "", ["answer.models[0].timeout", "'soon'"]),
        ("", "", 'replicates = "two"', ["judge.replicates", "'two'"]),
        ("", "max_retries = -1", "", ["judge.judges[0].max_retries", "-1"]),
        ("", 'backend = "ollama"', "", ["judge.judges[0].backend", "'ollama'"]),
        ("", "price_input_per_mtok = 0.4", "", ["price_output_per_mtok"]),
        ("", "", "sampling = { temperature = -1 }", ["judge.sampling.temperature"]),
        ("", "", "sampling = { tempreature = 0.5 }", ["judge.sampling.tempreature", "unknown"]),
    ]
    for a_extra, j_extra, j_top, needles in cases:
        cfg = _config(tmp_path, server.url, api_key, a_extra, j_extra, j_top)
        code = run_cli(["run", cfg, "--no-progress"])
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2, (j_extra, a_extra, j_top)
        assert "eval.toml" in line
        for n in needles:
            assert n in line, (n, line)
    # the whole file was checked before the answer stage started: nothing sent, nothing written
    assert server.count == 0 and not (tmp_path / "answers.parquet").exists()


def test_yaml_numbers_written_as_strings_are_accepted(tmp_path, server, api_key):
    """PyYAML reads `5e-3` (no dot) as a string: a number in a string is taken as that number."""
    qp = _questions(tmp_path, 1)
    p = tmp_path / "eval.yaml"
    p.write_text(
        f"answer:\n  questions: {qp.name}\n  out: answers.parquet\n"
        f"  sampling: {{temperature: 5e-1, max_tokens: '12'}}\n"
        f"  models:\n    - {{base_url: '{server.url}', model: eval-1, api_key_env: {api_key},"
        f" timeout: '30'}}\n"
    )
    assert run_cli(["run", p, "--no-progress"]) == 0
    body = server.requests[0]["body"]
    assert body["temperature"] == 0.5 and body["max_tokens"] == 12


def test_rubric_error_names_the_config_key(tmp_path, server, api_key, capsys):
    cfg = _config(tmp_path, server.url, api_key, judge_top='rubric = "my_rubric.yaml"')
    assert run_cli(["run", cfg, "--no-progress"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "judge.rubric" in line and "my_rubric.yaml" in line and "eval.toml" in line
    assert "--rubric" not in line
    bad = tmp_path / "my_rubric.yaml"
    bad.write_text("id: x\nversion: '1'\ndimensions: []\n")
    assert run_cli(["run", cfg, "--no-progress"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "judge.rubric" in line and "dimensions" in line
    assert server.count == 0


def test_cli_values_out_of_range_name_the_option(tmp_path, server, api_key, capsys):
    ap = tmp_path / "answers.parquet"
    make_answers(1, models=("m1",), dimensions="A").to_parquet(ap)
    base = ["judge", ap, "--base-url", server.url, "--judge", "j", "--out", tmp_path / "r.parquet"]
    base += ["--api-key-env", api_key, "--no-progress"]
    for extra, needle in [
        (["--concurrency", "0"], "--concurrency"),
        (["--timeout", "-3"], "--timeout"),
        (["--max-tokens", "0"], "max_tokens"),
        (["--price-input", "0.4"], "--price-output"),
    ]:
        code = run_cli(base + extra)
        line = _one_line_error(capsys.readouterr().err)
        assert code == 2 and needle in line, (extra, line)
    assert server.count == 0


def test_library_endpoint_specs_are_validated_too():
    import pytest

    from irtpeer.harness.endpoints import make_backend
    from irtpeer.harness.errors import ConfigError

    with pytest.raises(ConfigError, match=r"concurrency.*'lots'"):
        make_backend({"base_url": "http://x/v1", "model": "m", "concurrency": "lots"})
    with pytest.raises(ConfigError, match=r"engine.*devcie"):
        make_backend({"backend": "transformers", "model": "m", "engine": {"devcie": "cpu"}})


# ---- item 8: table errors show the file name ------------------------------------------------------
def test_table_errors_name_the_file(tmp_path, server, api_key, capsys):
    q = tmp_path / "my_questions.csv"
    pd.DataFrame({"question": ["q1"], "text": ["hi"]}).to_csv(q, index=False)
    code = run_cli(
        ["answer", q, "--base-url", server.url, "--model", "m", "--out", tmp_path / "a.parquet"]
        + ["--api-key-env", api_key, "--no-progress"]
    )
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "my_questions.csv" in line and "prompt" in line and "''" not in line

    dup = tmp_path / "dup_questions.csv"
    pd.DataFrame({"question": ["q1", "q1"], "prompt": ["a", "b"]}).to_csv(dup, index=False)
    code = run_cli(
        ["answer", dup, "--base-url", server.url, "--model", "m", "--out", tmp_path / "a.parquet"]
        + ["--api-key-env", api_key, "--no-progress"]
    )
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "dup_questions.csv" in line

    ans = tmp_path / "my_answers.jsonl"
    make_answers(1).drop(columns=["prompt"]).to_json(ans, orient="records", lines=True)
    code = run_cli(
        ["judge", ans, "--base-url", server.url, "--judge", "j", "--out", tmp_path / "r.parquet"]
        + ["--api-key-env", api_key, "--no-progress"]
    )
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "my_answers.jsonl" in line and "prompt" in line and "''" not in line

    ans2 = tmp_path / "bad_dims.parquet"
    make_answers(1, dimensions="A,Q").to_parquet(ans2)
    code = run_cli(
        ["judge", ans2, "--base-url", server.url, "--judge", "j", "--out", tmp_path / "r.parquet"]
        + ["--api-key-env", api_key, "--no-progress"]
    )
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "bad_dims.parquet" in line and "'Q'" in line
    assert server.count == 0


def test_in_memory_tables_have_no_empty_file_name(tmp_path):
    import pytest

    from irtpeer.harness.answer import answer_questions
    from irtpeer.harness.errors import ConfigError

    with pytest.raises(ConfigError) as ei:
        answer_questions(pd.DataFrame({"question": ["a"]}), {"m": None}, store_path=tmp_path / "s")
    assert "''" not in str(ei.value) and "prompt" in str(ei.value)


def test_empty_or_repeated_tables_are_one_line_errors_with_plain_row_numbers(
    tmp_path, server, api_key, capsys
):
    """An empty questions or answers table stops before any call (it was a KeyError), and
    repeated ids are named by plain row numbers (they printed as np.int64(0))."""
    url = server.url
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"question": [], "prompt": []}).to_csv(empty, index=False)
    base = ["--base-url", url, "--api-key-env", api_key, "--no-progress"]
    code = run_cli(["answer", empty, "--model", "m1", "--out", tmp_path / "a.parquet", *base])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "empty.csv" in line and "no rows" in line
    assert not (tmp_path / "a.parquet").exists()

    twice = tmp_path / "twice.csv"
    pd.DataFrame({"question": ["q0", "q0", "q1"], "prompt": ["a", "b", "c"]}).to_csv(twice,
                                                                                   index=False)
    code = run_cli(["answer", twice, "--model", "m1", "--out", tmp_path / "b.parquet", *base])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "at rows [0, 1]" in line

    answers = tmp_path / "answers.csv"
    pd.DataFrame({"model": [], "question": [], "prompt": [], "answer": []}).to_csv(answers,
                                                                                  index=False)
    code = run_cli(["judge", answers, "--judge", "j1", "--out", tmp_path / "r.parquet", *base])
    line = _one_line_error(capsys.readouterr().err)
    assert code == 2 and "answers.csv" in line and "no rows" in line
