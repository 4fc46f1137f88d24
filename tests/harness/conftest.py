"""Shared fixtures of the harness tests: a real OpenAI-compatible server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["NO_PROXY"] = "127.0.0.1,localhost"
os.environ["no_proxy"] = "127.0.0.1,localhost"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAIServer
from harness_support import TEST_KEY, make_answers


@pytest.fixture
def server():
    srv = FakeOpenAIServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("IRTPEER_TEST_KEY", TEST_KEY)
    return "IRTPEER_TEST_KEY"


@pytest.fixture
def answers_file(tmp_path):
    p = tmp_path / "answers.parquet"
    make_answers().to_parquet(p)
    return p


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory):
    """A 2-layer Llama with a word-level tokenizer and a chat template, built and saved locally."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [
        "hello",
        "please",
        "help",
        "the",
        "answer",
        "is",
        "yes",
        "no",
        "maybe",
        "because",
        "of",
        "a",
        "reason",
        "question",
        "prompt",
        "user",
        "assistant",
        "system",
        "good",
        "bad",
        "true",
        "false",
        "one",
        "two",
        "three",
    ]
    special = ["<pad>", "<unk>", "<eos>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>"]
    vocab = {w: i for i, w in enumerate(special + words)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(cfg)
    path = tmp_path_factory.mktemp("tiny_chat_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
