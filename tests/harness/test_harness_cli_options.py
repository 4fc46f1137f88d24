"""Documented harness options run as a user types them (issue 12, items 10 and 18): --label,
--backend transformers|vllm, --no-structured, --price-input/--price-output (and a partial price
list), --store/--manifest, --replicates N then `irtpeer score --duplicates mean`, and the
README's third command, `irtpeer score` on the harness's own output, checked against statsmodels."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from fake_openai import score_for
from harness_support import make_answers, run_cli


def _questions(tmp_path, n=3):
    p = tmp_path / "questions.csv"
    pd.DataFrame(
        {"question": [f"q{i}" for i in range(n)], "prompt": ["hello please help"] * n}
    ).to_csv(p, index=False)
    return p


def _judge_argv(ap, out, server, api_key, *extra):
    return [
        "judge",
        ap,
        "--base-url",
        server.url,
        "--judge",
        "judge-a",
        "--out",
        out,
        "--api-key-env",
        api_key,
        "--no-progress",
        *extra,
    ]


def _manifest(path):
    return json.loads(path.read_text())


# ---- item 10: --label for a local checkpoint ------------------------------------------------------
def test_answer_with_a_local_checkpoint_and_a_label(tmp_path, tiny_chat_model, capsys):
    qp = _questions(tmp_path, 2)
    out = tmp_path / "answers.parquet"
    argv = ["answer", qp, "--backend", "transformers", "--model", tiny_chat_model]
    argv += ["--label", "tiny-local", "--max-tokens", "4", "--out", out, "--no-progress"]
    assert run_cli(argv) == 0
    a = pd.read_parquet(out)
    assert a["model"].tolist() == ["tiny-local", "tiny-local"], "labelled, not by its path"
    assert (a["status"] == "ok").all() and a["answer"].map(lambda t: isinstance(t, str)).all()
    assert (a["completion_tokens"] <= 4).all()
    m = _manifest(tmp_path / "answers.manifest.json")
    assert list(m["endpoints"]) == ["tiny-local"]
    assert m["endpoints"]["tiny-local"]["kind"] == "transformers"
    capsys.readouterr()
    code = run_cli(argv[:-5] + ["--label", "x", "--label", "y", "--out", out, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--label" in err and "Traceback" not in err


# ---- item 10 + 18: prices ---------------------------------------------------------------------------
def _expected_usd(ratings: pd.DataFrame, pin: float, pout: float) -> float:
    calls = ratings.drop_duplicates("call_id")  # tokens are repeated on every item row of a call
    return float(
        (calls["prompt_tokens"].sum() * pin + calls["completion_tokens"].sum() * pout) / 1e6
    )


def test_price_options_give_the_cost_of_the_tokens_sent(tmp_path, server, api_key, capsys):
    ap = tmp_path / "answers.parquet"
    make_answers(3, dimensions="A").to_parquet(ap)
    out = tmp_path / "r.parquet"
    argv = _judge_argv(ap, out, server, api_key, "--price-input", "0.4", "--price-output", "1.6")
    assert run_cli(argv) == 0
    r = pd.read_parquet(out)
    cost = _manifest(tmp_path / "r.manifest.json")["cost"]
    assert cost["estimated_usd"] == pytest.approx(_expected_usd(r, 0.4, 1.6), abs=1e-6)
    assert cost["estimated_usd"] > 0 and cost["unpriced"] == [] and cost["complete"] is True
    assert "estimated $" in capsys.readouterr().err
    # the rerun sends nothing and so costs nothing
    assert run_cli(argv) == 0
    assert _manifest(tmp_path / "r.manifest.json")["cost"]["estimated_usd"] == 0


def test_partly_priced_judges_report_the_known_part_and_name_the_others(tmp_path, server, api_key):
    ap = tmp_path / "answers.parquet"
    make_answers(2, dimensions="T").to_parquet(ap)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        textwrap.dedent(f"""
        [judge]
        answers = "answers.parquet"
        out = "r.parquet"
        [[judge.judges]]
        label = "priced"
        base_url = "{server.url}"
        model = "judge-a"
        api_key_env = "{api_key}"
        price_input_per_mtok = 2.0
        price_output_per_mtok = 8.0
        [[judge.judges]]
        label = "free"
        base_url = "{server.url}"
        model = "judge-b"
        api_key_env = "{api_key}"
        """)
    )
    assert run_cli(["run", cfg, "--no-progress"]) == 0
    r = pd.read_parquet(tmp_path / "r.parquet")
    cost = _manifest(tmp_path / "r.manifest.json")["cost"]
    known = _expected_usd(r[r.judge == "priced"], 2.0, 8.0)
    assert known > 0 and cost["estimated_usd"] == pytest.approx(known, abs=1e-6)
    assert cost["unpriced"] == ["free"] and cost["complete"] is False
    assert cost["per_endpoint_usd"]["free"] is None


# ---- item 18: --no-structured, --store, --manifest -------------------------------------------------
def test_no_structured_sends_no_response_format_and_still_scores(tmp_path, server, api_key):
    ap = tmp_path / "answers.parquet"
    make_answers(2, models=("m1",), dimensions="E").to_parquet(ap)
    out = tmp_path / "r.parquet"
    assert run_cli(_judge_argv(ap, out, server, api_key, "--no-structured")) == 0
    assert server.count == 2
    assert all("response_format" not in x["body"] for x in server.requests)
    r = pd.read_parquet(out)
    for x in server.requests:
        user = x["body"]["messages"][-1]["content"]
        q = "q0" if "ANSWER-m1-Q0" in user else "q1"
        got = r[r.question == q].set_index("item")["score"]
        assert {k: int(v) for k, v in got.items()} == {
            k: score_for(user + "judge-a", k) for k in ("E1", "E2", "E3")
        }
    # structured and unstructured calls are different calls (the mode is in the key)
    assert run_cli(_judge_argv(ap, out, server, api_key)) == 0 and server.count == 4


def test_store_and_manifest_paths(tmp_path, server, api_key):
    ap = tmp_path / "answers.parquet"
    make_answers(2, models=("m1",), dimensions="A").to_parquet(ap)
    out = tmp_path / "r.parquet"
    store, manifest = tmp_path / "cache" / "calls.jsonl", tmp_path / "logs" / "run.json"
    extra = ["--store", store, "--manifest", manifest]
    assert run_cli(_judge_argv(ap, out, server, api_key, *extra)) == 0
    assert store.read_bytes().count(b"\n") == 2 and server.count == 2
    assert not (tmp_path / "r.calls.jsonl").exists() and not (tmp_path / "r.manifest.json").exists()
    m = _manifest(manifest)
    assert m["settings"]["store"] == str(store) and m["counts"]["calls_done"] == 2
    # another output, the same store: nothing is sent again
    out2 = tmp_path / "r2.parquet"
    assert run_cli(_judge_argv(ap, out2, server, api_key, *extra)) == 0 and server.count == 2
    assert _manifest(manifest)["counts"]["calls_cached"] == 2
    assert pd.read_parquet(out2)["score"].tolist() == pd.read_parquet(out)["score"].tolist()


# ---- item 18: --backend vllm ------------------------------------------------------------------------
def test_backend_vllm_without_vllm_is_one_clear_line(tmp_path, server, api_key, capsys):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; this checks the message shown without it")
    ap = tmp_path / "answers.parquet"
    make_answers(1, dimensions="A").to_parquet(ap)
    code = run_cli(
        ["judge", ap, "--backend", "vllm", "--judge", "Qwen/Qwen2.5-0.5B-Instruct"]
        + ["--out", tmp_path / "r.parquet", "--no-progress"]
    )
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "pip install 'irtpeer[vllm]'" in lines[0] and "--backend openai" in lines[0]
    assert not (tmp_path / "r.calls.jsonl").exists()


def test_backend_transformers_without_transformers_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    qp = _questions(tmp_path, 1)
    code = run_cli(
        ["answer", qp, "--backend", "transformers", "--model", "runs/x/final"]
        + ["--out", tmp_path / "a.parquet", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "pip install 'irtpeer[local]'" in err and "runs/x/final" in err


FAKE_VLLM = '''
"""Stands in for vLLM's offline API (LLM.chat, SamplingParams, StructuredOutputsParams)."""
import json
from types import SimpleNamespace

from fake_openai import _KEYS, score_for
from vllm_params import SamplingParams, StructuredOutputsParams  # noqa: F401 (vllm's names)

ENGINES = []


class LLM:
    def __init__(self, model, **kw):
        self.model, self.kw, self.calls = model, kw, []
        ENGINES.append(self)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append((messages, sampling_params))
        outs = []
        for conv, sp in zip(messages, sampling_params):
            user = conv[-1]["content"]
            keys = [k.strip() for k in _KEYS.search(user).group(1).split(",")]
            text = json.dumps({k: score_for(user + self.model, k) for k in keys})
            outs.append(SimpleNamespace(
                prompt_token_ids=[0] * 11,
                outputs=[SimpleNamespace(text=text, token_ids=[1] * 5, finish_reason="stop")],
            ))
        return outs
'''


@pytest.fixture
def fake_vllm(tmp_path, monkeypatch):
    import irtpeer.harness.vllm_backend as vb

    pkg = tmp_path / "fakepkgs" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_VLLM)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.setattr(vb, "_ENGINES", {})
    import vllm

    yield vllm
    sys.modules.pop("vllm", None)


@pytest.mark.parametrize("structured", [True, False])
def test_backend_vllm_through_the_cli(tmp_path, fake_vllm, structured):
    ap = tmp_path / "answers.parquet"
    make_answers(3, models=("m1", "m2"), dimensions="A,C").to_parquet(ap)
    out = tmp_path / "r.parquet"
    argv = ["judge", ap, "--backend", "vllm", "--judge", "judge-v", "--out", out, "--no-progress"]
    assert run_cli(argv + ([] if structured else ["--no-structured"])) == 0
    (engine,) = fake_vllm.ENGINES
    assert engine.model == "judge-v" and [len(c[0]) for c in engine.calls] == [12]
    params = [p.kw for p in engine.calls[0][1]]
    assert all(("structured_outputs" in p) == structured for p in params)
    assert all(p["temperature"] == 0.0 and p["max_tokens"] == 256 for p in params)
    r = pd.read_parquet(out)
    assert len(r) == 2 * 3 * 2 * 3 and (r["parse_status"] == "ok").all()
    assert (r["prompt_tokens"] == 11).all() and (r["completion_tokens"] == 5).all()
    for conv in engine.calls[0][0]:  # the scores are the engine's, row by row
        user = conv[-1]["content"]
        item = _first_key(user)
        m = "m1" if "ANSWER-m1-" in user else "m2"
        q = "q" + user.split(f"ANSWER-{m}-Q")[1][0]
        got = r[(r.model == m) & (r.question == q) & (r["item"] == item)]["score"]
        assert int(got.iloc[0]) == score_for(user + "judge-v", item)


def _first_key(user: str) -> str:
    from fake_openai import _KEYS

    return _KEYS.search(user).group(1).split(",")[0].strip()


# ---- item 18: replicates, then irtpeer score ---------------------------------------------------------
def _measures(out_dir) -> pd.DataFrame:
    m = pd.read_csv(out_dir / "measures.csv")
    return m.set_index(["facet", "element"])


def test_replicates_then_score_with_duplicates_mean(tmp_path, server, api_key, capsys):
    ap = tmp_path / "answers.parquet"
    make_answers(8, models=("m1", "m2", "m3"), dimensions="A").to_parquet(ap)
    out = tmp_path / "r.parquet"
    argv = _judge_argv(ap, out, server, api_key, "--judge", "judge-b", "--replicates", "2")
    assert run_cli(argv) == 0
    r = pd.read_parquet(out)
    assert sorted(r["replicate"].unique()) == [0, 1] and len(r) == 2 * 3 * 8 * 2 * 3
    assert server.count == 3 * 8 * 2 * 2  # each replicate is its own call
    capsys.readouterr()
    # the default refuses duplicated judgments and names the way out
    assert run_cli(["score", out]) == 2
    assert "--duplicates mean" in capsys.readouterr().err
    single = tmp_path / "single.parquet"
    r[r.replicate == 0].drop(columns="replicate").to_parquet(single)
    for path, extra, d in [
        (out, ["--duplicates", "mean"], "mean"),
        (out, ["--duplicates", "keep"], "keep"),
        (single, [], "single"),
    ]:
        assert run_cli(["score", path, "--out", tmp_path / d, *extra]) == 0
    mean, keep, one = (_measures(tmp_path / d) for d in ("mean", "keep", "single"))
    # the fake judge answers a replicate exactly as the first call: averaging two equal
    # judgments is one judgment, keeping both doubles the information (SE / sqrt 2)
    np.testing.assert_allclose(mean["measure"], one["measure"], atol=1e-6)
    np.testing.assert_allclose(mean["se"], one["se"], rtol=1e-6)
    np.testing.assert_allclose(keep["measure"], one["measure"], atol=1e-6)
    np.testing.assert_allclose(keep["se"], one["se"] / np.sqrt(2), rtol=1e-4)


def test_readme_third_command_scores_the_harness_output_like_a_logistic_regression(
    tmp_path, server, api_key, capsys
):
    """`irtpeer score ratings.parquet` on what `irtpeer judge` wrote. Reference: the binary
    many-facet Rasch model is a logistic regression with one free parameter per model and
    sum-to-zero effects of question, judge and item; statsmodels fits it by maximum likelihood."""
    import statsmodels.formula.api as smf

    ap = tmp_path / "answers.parquet"
    make_answers(10, models=("m1", "m2", "m3"), dimensions="A").to_parquet(ap)
    out = tmp_path / "ratings.parquet"
    assert run_cli(_judge_argv(ap, out, server, api_key, "--judge", "judge-b")) == 0
    capsys.readouterr()
    assert run_cli(["score", out, "--out", tmp_path / "scores"]) == 0
    printed = capsys.readouterr().out
    for m in ("m1", "m2", "m3"):
        assert m in printed
    got = _measures(tmp_path / "scores")
    r = pd.read_parquet(out)
    df = r.assign(score=r["score"].astype(int))
    for facet in ("model", "question", "judge", "item"):  # no element at 0 % or 100 %
        share = df.groupby(facet)["score"].mean()
        assert ((share > 0) & (share < 1)).all(), facet
    fit = smf.logit(
        "score ~ 0 + C(model) + C(question, Sum) + C(judge, Sum) + C(item, Sum)", df
    ).fit(disp=0, tol=1e-12, maxiter=200)
    for m in ("m1", "m2", "m3"):
        ref = fit.params[f"C(model)[{m}]"]
        assert got.loc[("model", m), "measure"] == pytest.approx(ref, abs=1e-5)
    # facet measures are difficulties/severities: minus the regression's effect
    assert got.loc[("judge", "judge-a"), "measure"] == pytest.approx(
        -fit.params["C(judge, Sum)[S.judge-a]"], abs=1e-5
    )
    assert got.loc[("item", "A1"), "measure"] == pytest.approx(
        -fit.params["C(item, Sum)[S.A1]"], abs=1e-5
    )
