"""The vLLM offline backend when vLLM rejects some prompts (issue 13, item 6), through the real
harness with a fake ``vllm`` module in ``sys.modules``.

The fake engine behaves like vLLM's ``LLM.chat`` as read in its source (``entrypoints/llm.py``,
``_validate_and_add_requests``): every prompt of a batch is validated and added before anything is
generated, and the first invalid one (prompt longer than ``max_model_len``, a JSON schema the
xgrammar backend does not support) aborts the prompts already added and raises one ``ValueError``
for the whole batch. It records what it generated, so a prompt generated twice would show.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from types import SimpleNamespace
from typing import ClassVar

import pandas as pd
import pytest
from fake_openai import _KEYS, score_for
from harness_support import make_answers, run_cli
from vllm_params import SamplingParams, StructuredOutputsParams

TOO_LONG = "The decoder prompt (length {n}) is longer than the maximum model length of {m}."
XGR_UNSUPPORTED = "The provided JSON schema contains features not supported by xgrammar."


class LLM:
    instances: ClassVar[list[LLM]] = []

    def __init__(self, model, **kw):
        self.model, self.kw = model, kw
        self.max_model_len = kw.get("max_model_len", 400)
        self.submitted: list[int] = []  # prompts per chat() call
        self.generated: list[str] = []  # last user message of every generated prompt
        self.aborted = 0
        self.params: list[SamplingParams] = []
        LLM.instances.append(self)

    def _validate(self, conv, sp) -> None:
        n = sum(len(m["content"]) for m in conv) // 4  # ~4 characters a token
        if n > self.max_model_len:
            raise ValueError(TOO_LONG.format(n=n, m=self.max_model_len))
        so = sp.kw.get("structured_outputs")
        if so is not None and "multipleOf" in json.dumps(so.json):
            raise ValueError(XGR_UNSUPPORTED)

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        assert len(messages) == len(sampling_params)
        self.submitted.append(len(messages))
        for added, (conv, sp) in enumerate(zip(messages, sampling_params)):
            try:
                self._validate(conv, sp)
            except ValueError:
                self.aborted += added  # vLLM aborts the prompts it had added, then raises
                raise
        self.params += sampling_params
        no_ws = self.kw.get("structured_outputs_config", {}).get("disable_any_whitespace")
        outs = []
        for conv, sp in zip(messages, sampling_params):
            user = conv[-1]["content"]
            keys = list(sp.kw["structured_outputs"].json["properties"])
            obj = {k: score_for(user, k) for k in keys}
            text = json.dumps(obj, separators=(",", ":") if no_ws else None)
            self.generated.append(user)
            outs.append(
                SimpleNamespace(
                    prompt_token_ids=[0] * (len(user) // 4),
                    outputs=[SimpleNamespace(text=text, token_ids=[1] * 6, finish_reason="stop")],
                )
            )
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    import irtpeer.harness.vllm_backend as vb

    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.LLM, mod.SamplingParams = LLM, SamplingParams
    mod.StructuredOutputsParams = StructuredOutputsParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setattr(vb, "_ENGINES", {})
    LLM.instances = []
    return mod


def _answers_with_one_too_long(tmp_path):
    a = make_answers(4, models=("m1", "m2"), dimensions="A,C")
    long = (a.model == "m2") & (a.question == "q1")
    a.loc[long, "answer"] = "ANSWER-m2-Q1 " + "blah " * 2000  # ~2500 tokens > max_model_len 400
    p = tmp_path / "answers.parquet"
    a.to_parquet(p)
    return p


def test_too_long_prompt_fails_alone_through_the_cli_and_a_rerun_retries_only_it(
    tmp_path, fake_vllm
):
    ap, out = _answers_with_one_too_long(tmp_path), tmp_path / "ratings.parquet"
    argv = ["judge", ap, "--backend", "vllm", "--judge", "judge-v", "--out", out, "--no-progress"]
    assert run_cli(argv) == 1  # some calls failed: the documented exit code

    (engine,) = LLM.instances
    # the engine forbids free whitespace in structured JSON (vLLM reads it from the engine config)
    assert engine.kw["structured_outputs_config"] == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    r = pd.read_parquet(out)
    bad = (r.model == "m2") & (r.question == "q1")
    assert len(r) == 2 * 4 * 2 * 3 and bad.sum() == 6
    assert (r.loc[bad, "parse_status"] == "failed").all() and r.loc[bad, "score"].isna().all()
    for reason in r.loc[bad, "reason"]:
        assert reason.startswith("vllm_rejected: vLLM rejected the prompt: ")
        assert "longer than the maximum model length of 400" in reason
    good = r[~bad]
    assert (good["parse_status"] == "ok").all() and good["score"].notna().all()
    # every other prompt was generated exactly once, with its own scores
    assert len(engine.generated) == len(set(engine.generated)) == 14
    assert all("blah blah" not in u for u in engine.generated)
    expected = {}  # (model, question, item) -> the fake engine's score for that prompt
    for user in engine.generated:
        m, q = user.split("ANSWER-")[1].split()[0].split("-Q")
        for k in _KEYS.search(user).group(1).split(","):
            expected[(m, f"q{q}", k.strip())] = score_for(user, k.strip())
    assert [expected[(x.model, x.question, x.item)] for x in good.itertuples()] == list(
        good["score"].astype(int)
    )
    c = json.loads((tmp_path / "ratings.manifest.json").read_text())["counts"]
    assert c["failed_vllm_rejected"] == 2 and c["calls_failed"] == 2
    assert c["retry_vllm_rejected"] >= 16  # the first batch of 16 was resubmitted in halves
    first_run_calls = len(engine.submitted)
    assert engine.submitted[0] == 16 and first_run_calls <= 1 + 2 * 2 * 4

    # a rerun of the same command re-sends only the two failed calls (both are rejected again)
    assert run_cli(argv) == 1
    assert engine.submitted[first_run_calls:] == [2, 1, 1]
    assert len(engine.generated) == 14


def _request(schema_extra=None, text="x"):
    from irtpeer.harness.backend import ChatRequest, Sampling

    prop = {"type": "integer", "enum": [0, 1], **(schema_extra or {})}
    schema = {"type": "object", "properties": {"K1": prop}, "required": ["K1"]}
    return ChatRequest.make([{"role": "user", "content": text}], Sampling(), schema=schema)


def test_rejected_schema_and_prompts_are_isolated_by_halving(fake_vllm):
    from irtpeer.harness.errors import CallFailed
    from irtpeer.harness.manifest import RunStats
    from irtpeer.harness.vllm_backend import VLLMBackend

    reqs = [_request(text=f"prompt {i}") for i in range(8)]
    reqs[2] = _request({"multipleOf": 2}, text="prompt 2")  # xgrammar refuses the schema
    reqs[5] = _request(text="prompt 5 " + "y" * 4000)  # too long
    stats = RunStats()
    res = VLLMBackend("judge-v").chat_batch(reqs, stats)
    (engine,) = LLM.instances
    assert [type(x).__name__ for x in res] == ["ChatResult"] * 2 + ["CallFailed"] + [
        "ChatResult"
    ] * 2 + ["CallFailed"] + ["ChatResult"] * 2
    assert isinstance(res[2], CallFailed) and res[2].kind == "vllm_rejected"
    assert XGR_UNSUPPORTED in str(res[2]) and "longer than the maximum" in str(res[5])
    assert all(
        json.loads(x.text) == {"K1": score_for(f"prompt {i}", "K1")}
        for i, x in enumerate(res)
        if i not in (2, 5)
    )
    assert sorted(engine.generated) == sorted(f"prompt {i}" for i in (0, 1, 3, 4, 6, 7))
    # 8 -> halves of 4 -> the halves' good pair runs, the bad pair splits into two singles
    assert engine.submitted == [8, 4, 2, 2, 1, 1, 4, 2, 1, 1, 2]
    assert stats.counts["failed_vllm_rejected"] == 2
    assert stats.counts["requests_sent"] == sum(engine.submitted)


def test_a_setting_vllm_rejects_while_building_params_fails_only_that_request(fake_vllm):
    from irtpeer.harness.manifest import RunStats
    from irtpeer.harness.vllm_backend import VLLMBackend

    class Picky(StructuredOutputsParams):
        def __init__(self, json=None, **kw):
            if "K9" in json["properties"]:
                raise ValueError("bad schema K9")  # like vLLM's VLLMValidationError(ValueError)
            super().__init__(json=json, **kw)

    fake_vllm.StructuredOutputsParams = Picky
    bad = _request()
    bad.schema["properties"] = {"K9": {"type": "integer"}}
    res = VLLMBackend("judge-v").chat_batch(
        [_request(text="a"), bad, _request(text="b")], RunStats()
    )
    assert "bad schema K9" in str(res[1]) and res[1].kind == "vllm_rejected"
    assert res[0].text and res[2].text and LLM.instances[0].submitted == [2]


def test_errors_other_than_a_rejection_still_stop_the_run(fake_vllm):
    from irtpeer.harness.manifest import RunStats
    from irtpeer.harness.vllm_backend import VLLMBackend

    def dead(*a, **k):
        raise RuntimeError("EngineDeadError")

    b = VLLMBackend("judge-v")
    b._engine().chat = dead
    with pytest.raises(RuntimeError, match="EngineDeadError"):
        b.chat_batch([_request()], RunStats())


@pytest.mark.parametrize(
    "toml, expect, per_request",
    [
        ("", {"backend": "xgrammar", "disable_any_whitespace": True}, True),
        ('backend = "guidance"', {"backend": "guidance", "disable_any_whitespace": True}, True),
        ('backend = "outlines"', {"backend": "outlines"}, False),  # vLLM refuses it there
        (
            "disable_any_whitespace = false",
            {"backend": "xgrammar", "disable_any_whitespace": False},
            False,
        ),
    ],
)
def test_whitespace_setting_from_a_config_file(tmp_path, fake_vllm, toml, expect, per_request):
    make_answers(2, models=("m1",), dimensions="A").to_parquet(tmp_path / "answers.parquet")
    so = f", structured_outputs_config = {{ {toml} }}" if toml else ""
    cfg = tmp_path / "eval.toml"
    cfg.write_text(
        '[judge]\nanswers = "answers.parquet"\nrubric = "persona"\nout = "r.parquet"\n\n'
        '[[judge.judges]]\nbackend = "vllm"\nmodel = "judge-v"\n'
        f"engine = {{ max_model_len = 4096{so} }}\n"
    )
    assert run_cli(["run", cfg, "--no-progress"]) == 0
    (eng,) = LLM.instances
    assert eng.kw == {"max_model_len": 4096, "structured_outputs_config": expect}
    flags = {sp.kw["structured_outputs"].disable_any_whitespace for sp in eng.params}
    assert flags == {per_request} and len(eng.params) == 2
    r = pd.read_parquet(tmp_path / "r.parquet")
    assert (r["parse_status"] == "ok").all() and len(r) == 6


def test_whitespace_setting_is_part_of_the_call_key(fake_vllm):
    from irtpeer.harness.vllm_backend import VLLMBackend

    ws = {"structured_outputs_config": {"disable_any_whitespace": False}}
    a, b = VLLMBackend("m"), VLLMBackend("m", engine_kwargs=ws)
    assert a.identity() != b.identity()
    assert a.identity()["json_whitespace"] is False and b.identity()["json_whitespace"] is True
    plain = VLLMBackend("m", structured=False)
    assert "structured_outputs_config" not in plain.load_kwargs()
    assert "structured_outputs" not in plain.sampling_params(_request()).kw
    assert a.sampling_params(_request()).kw["structured_outputs"].disable_any_whitespace is True
