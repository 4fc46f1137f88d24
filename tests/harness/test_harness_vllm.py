"""The vLLM offline backend: request building and result parsing through its interface with an
injected engine (no vLLM needed), and a real small model on a GPU when one is available."""

from __future__ import annotations

import importlib.util
import json
import os
from types import SimpleNamespace

import pytest
from fake_openai import score_for
from harness_support import make_answers
from vllm_params import SamplingParams as FakeSamplingParams
from vllm_params import StructuredOutputsParams as FakeStructured

from irtpeer.harness.judge import judge_answers
from irtpeer.harness.rubrics import load_rubric
from irtpeer.harness.vllm_backend import VLLMBackend


class FakeLLM:
    """Stands in for vllm.LLM: records every chat() call and answers like a judge."""

    def __init__(self, bad_first_for: str | None = None):
        self.calls = []
        self.bad_first_for = bad_first_for

    def chat(self, messages, sampling_params=None, use_tqdm=True):
        self.calls.append((messages, sampling_params, use_tqdm))
        outs = []
        for conv, sp in zip(messages, sampling_params):
            keys = list(sp.kw["structured_outputs"].json["properties"])
            user = conv[-1]["content"]
            obj = {k: score_for(user, k) for k in keys}
            if self.bad_first_for and self.bad_first_for in user and len(conv) <= 2:
                text = "Sure! Here are my scores: " + json.dumps(obj)  # not strict JSON
            else:
                text = json.dumps(obj)
            outs.append(
                SimpleNamespace(
                    prompt_token_ids=list(range(len(user) // 4)),
                    outputs=[SimpleNamespace(text=text, token_ids=[1] * 7, finish_reason="stop")],
                )
            )
        return outs


FAKE_VLLM = SimpleNamespace(
    SamplingParams=FakeSamplingParams, StructuredOutputsParams=FakeStructured, LLM=None
)


def test_requests_are_batched_with_structured_outputs_and_results_parsed(tmp_path):
    llm = FakeLLM(bad_first_for="ANSWER-m1-Q1")
    b = VLLMBackend("judge-model", llm=llm, vllm_module=FAKE_VLLM)
    rubric = load_rubric("persona")
    answers = make_answers(3, models=("m1",), dimensions="A,C")
    res = judge_answers(
        answers,
        {"vj": b},
        rubric,
        store_path=tmp_path / "s.jsonl",
        out=tmp_path / "r.parquet",
        progress=False,
    )
    # one engine call with all six prompts, then one with the two re-asks (q1 on A and on C)
    assert [len(c[0]) for c in llm.calls] == [6, 2]
    convs, params, use_tqdm = llm.calls[0]
    assert use_tqdm is False
    p = params[0].kw
    assert p["temperature"] == 0.0 and p["max_tokens"] == 256 and p["top_p"] == 1.0
    schema = p["structured_outputs"].json
    assert (
        schema["required"] in (["A1", "A2", "A3"], ["C1", "C2", "C3"])
        and schema["additionalProperties"] is False
    )
    assert convs[0][0]["role"] == "system" and convs[0][1]["content"].startswith(
        "["
    )  # rubric text first
    reask_conv = llm.calls[1][0][0]
    assert reask_conv[-2]["role"] == "assistant" and reask_conv[-2]["content"].startswith("Sure!")
    t = res.table
    assert t["score"].notna().all() and len(t) == 18
    assert set(t.loc[t.question == "q1", "parse_status"]) == {"ok_after_reask"}
    assert (t["prompt_tokens"] > 0).all() and (
        t.loc[t.parse_status == "ok", "completion_tokens"] == 7
    ).all()
    # resume: a second run with a fresh engine sends nothing
    llm2 = FakeLLM()
    judge_answers(
        answers,
        {"vj": VLLMBackend("judge-model", llm=llm2, vllm_module=FAKE_VLLM)},
        rubric,
        store_path=tmp_path / "s.jsonl",
        progress=False,
    )
    assert llm2.calls == []


def test_parse_output_edge_cases():
    from irtpeer.harness.errors import CallFailed

    assert isinstance(
        VLLMBackend.parse_output(SimpleNamespace(outputs=[], prompt_token_ids=[1])), CallFailed
    )
    r = VLLMBackend.parse_output(
        SimpleNamespace(
            prompt_token_ids=[1, 2],
            outputs=[SimpleNamespace(text="{", token_ids=[5], finish_reason="length")],
        )
    )
    assert r.finish_reason == "length" and r.prompt_tokens == 2 and r.completion_tokens == 1


def test_no_structured_outputs_when_disabled():
    from irtpeer.harness.backend import ChatRequest, Sampling

    b = VLLMBackend("m", structured=False, llm=FakeLLM(), vllm_module=FAKE_VLLM)
    req = ChatRequest.make(
        [{"role": "user", "content": "x"}], Sampling(seed=4), schema={"type": "object"}
    )
    assert b.sampling_params(req).kw == {
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 512,
        "seed": 4,
    }


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install 'irtpeer[vllm]'); the GPU test needs it"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible; the real-vLLM test runs only on a GPU machine"
    return None


@pytest.mark.skipif(_gpu_skip_reason() is not None, reason=str(_gpu_skip_reason()))
def test_real_vllm_small_model_judges_with_valid_json(tmp_path):
    model = os.environ.get("IRTPEER_VLLM_TEST_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    b = VLLMBackend(model, engine_kwargs={"max_model_len": 2048, "gpu_memory_utilization": 0.5})
    res = judge_answers(
        make_answers(2, models=("m1",), dimensions="A,E"),
        {"real": b},
        load_rubric("persona"),
        store_path=tmp_path / "s.jsonl",
        progress=False,
    )
    t = res.table
    assert len(t) == 12
    # structured outputs make every reply valid JSON with exactly the keys
    assert (t["parse_status"].isin(["ok", "ok_after_reask"])).all(), t[["raw", "reason"]]
    assert t["score"].isin([0, 1]).all()
