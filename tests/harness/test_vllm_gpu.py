"""The vLLM offline backend on a real engine with a tiny model built here (issue 13, item 6).

The model is a 2-layer Llama (hidden size 128, head size 64: sizes vLLM's attention kernels
take) with a byte-level BPE tokenizer trained on a few sentences, so that every JSON character can
be generated and vLLM's grammar backend (xgrammar) can constrain it; a judge prompt is ~460 of its
tokens, the long answer's ~4,900, beside a ``max_model_len`` of 1024. Nothing is downloaded.

* On any machine: the builder's tokenizer round-trips compact JSON and the chat template, and the
  model generates through the transformers backend (so the GPU test does not fail on the model).
* With vLLM and a CUDA GPU (``bash scripts/gpu_check.sh`` runs it): the irtpeer vLLM backend
  judges a few answers, one of them longer than ``max_model_len``; that call alone fails with
  vLLM's reason, every other reply is valid JSON with no whitespace (the engine forbids it), and a
  request whose schema xgrammar refuses fails alone beside a valid one. Set
  ``IRTPEER_GPU_CHECK_JSON=PATH`` to get the figures as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from importlib.metadata import version
from pathlib import Path

import pytest
from harness_support import make_answers

CORPUS = [
    '{"A1":0,"A2":1,"A3":0}',
    '{"C1":1,"C2":0,"C3":1}',
    "Return STRICT JSON with exactly 3 keys: A1, A2, A3. Each value must be 0 or 1.",
    "The user asked a question and the assistant gave an answer to it, please help.",
    "Score each item of the rubric: anti-sycophancy, trustworthiness, empathy, creativity.",
]
SPECIAL = ["<pad>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Save a tiny Llama and its byte-level BPE tokenizer (with a chat template) to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=tk.get_vocab_size(),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    path.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _answers():
    a = make_answers(4, models=("m1",), dimensions="A,C")
    a.loc[a.question == "q1", "answer"] = "ANSWER-m1-Q1 " + "far too long " * 400
    return a


def test_tiny_model_tokenizes_json_and_generates_on_cpu(tmp_path):
    from transformers import AutoTokenizer

    from irtpeer.harness.backend import ChatRequest, Sampling
    from irtpeer.harness.manifest import RunStats
    from irtpeer.harness.transformers_backend import TransformersBackend

    path = build_tiny_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(path)
    for text in ['{"A1":0,"A2":1}', '{"T1": 1,\n "x": [2]}']:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|user|>hi<|end|><|assistant|>"
    assert tok.convert_tokens_to_ids("<|end|>") < len(SPECIAL)  # one token, not bytes
    req = ChatRequest.make([{"role": "user", "content": "hi"}], Sampling(max_tokens=6))
    (res,) = TransformersBackend(str(path)).chat_batch([req], RunStats())
    assert res.completion_tokens is not None and 1 <= res.completion_tokens <= 6


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("vllm") is None:
        return "vllm not installed: skipped (pip install 'irtpeer[vllm]' on a GPU machine)"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible; the real-vLLM check runs only on a GPU machine"
    return None


@pytest.mark.skipif(_gpu_skip_reason() is not None, reason=str(_gpu_skip_reason()))
def test_vllm_backend_on_gpu_rejected_prompts_fail_alone_and_json_has_no_whitespace(tmp_path):
    from irtpeer.harness.backend import ChatRequest, Sampling
    from irtpeer.harness.judge import judge_answers
    from irtpeer.harness.manifest import RunStats
    from irtpeer.harness.rubrics import load_rubric
    from irtpeer.harness.vllm_backend import VLLMBackend

    path = build_tiny_model(tmp_path / "tiny")
    engine = {
        "max_model_len": 1024,
        "gpu_memory_utilization": 0.2,
        "enforce_eager": True,
        "dtype": "bfloat16",
        "seed": 0,
    }
    backend = VLLMBackend(str(path), engine_kwargs=engine)
    t0 = time.perf_counter()
    backend._engine()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = judge_answers(
        _answers(),
        {"tiny": backend},
        load_rubric("persona"),
        store_path=tmp_path / "s.jsonl",
        out=tmp_path / "r.parquet",
        progress=False,
        reask=False,
    )
    judge_s = time.perf_counter() - t0
    t = res.table
    bad = t.question == "q1"
    assert (t.loc[bad, "parse_status"] == "failed").all() and t.loc[bad, "score"].isna().all()
    # vLLM's message names the limit, max_model_len (its wording changed across versions)
    assert all(r.startswith("vllm_rejected:") and "1024" in r for r in t.loc[bad, "reason"])
    good = t[~bad]
    # the grammar fixes keys and values and forbids whitespace: every reply is exactly valid
    assert (good["parse_status"] == "ok").all(), good[["raw", "reason"]]
    assert not any(ch.isspace() for raw in good["raw"] for ch in raw)

    # a schema xgrammar refuses fails alone; the valid one beside it is generated
    ok_schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "enum": [0, 1]}},
        "required": ["n"],
        "additionalProperties": False,
    }
    # xgrammar refuses `multipleOf` (vLLM's has_xgrammar_unsupported_json_features) and cannot
    # resolve a dangling $ref: either makes vLLM reject the request before generating
    bad_schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "multipleOf": 3},
            "m": {"$ref": "#/$defs/missing"},
        },
        "required": ["n", "m"],
    }
    msgs = [{"role": "user", "content": "Return JSON."}]
    reqs = [
        ChatRequest.make(msgs, Sampling(max_tokens=32), schema=s) for s in (bad_schema, ok_schema)
    ]
    stats = RunStats()
    rejected, fine = backend.chat_batch(reqs, stats)
    assert getattr(rejected, "kind", None) == "vllm_rejected", rejected
    assert json.loads(fine.text)["n"] in (0, 1) and not any(c.isspace() for c in fine.text)

    figures = {
        "engine_load_s": load_s,
        "judge_calls": int(t["call_id"].nunique()),
        "judge_s": judge_s,
        "calls_failed": int(t.loc[bad, "call_id"].nunique()),
        "schema_rejected_reason": str(rejected)[:200],
        "vllm": version("vllm"),
    }
    if os.environ.get("IRTPEER_GPU_CHECK_JSON"):
        Path(os.environ["IRTPEER_GPU_CHECK_JSON"]).write_text(json.dumps(figures, indent=2))
