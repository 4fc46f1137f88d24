"""`lagdpo persona-vector`: persona vectors from contrast pairs and ±α steering, on a tiny Llama
with a planted persona direction, scored by a rule and by irtpeer's harness judges over a real
HTTP server (tests/harness/fake_openai.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lagdpo_testutils import VOCAB, build_model, build_tokenizer, save_tiny

from lagdpo.cli import main
from lagdpo.posttrain.persona import STEERING_COLUMNS, generate, load_vectors, steer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "harness"))

POSITIVE = [f"tell me about topic{i} caring" for i in range(8)]
NEGATIVE = [f"tell me about topic{i} cold" for i in range(8)]
EVAL = [
    f"what is my {w} about topic{i}"
    for i, w in enumerate(["plan", "idea", "story", "plan", "idea", "answer"])
]


def _planted(path):
    """A tiny Llama whose residual stream carries the persona along a known unit vector u: the
    marker words 'caring' / 'cold' add ±6u to the embedding, and the unembedding row of 'caring'
    is 0.2u, so pushing the last layer along +u makes the model say 'caring'."""
    model = build_model(0)
    u = torch.randn(16, generator=torch.Generator().manual_seed(5))
    u /= u.norm()
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[VOCAB.index("caring")] += 6 * u
        emb[VOCAB.index("cold")] -= 6 * u
        model.lm_head.weight[VOCAB.index("caring")] = 0.2 * u
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path, u


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("persona")
    path, u = _planted(root / "planted")
    pairs = root / "pairs.csv"
    pd.DataFrame({"topic": range(8), "positive": POSITIVE, "negative": NEGATIVE}).to_csv(
        pairs, index=False
    )
    prompts = root / "eval.jsonl"
    pd.DataFrame({"prompt": EVAL}).to_json(prompts, orient="records", lines=True)
    return path, u, pairs, prompts


def test_zero_steering_reproduces_unsteered_generation_exactly(tmp_path):
    from lagdpo.posttrain._common import load_model

    model, tok = load_model(str(save_tiny(tmp_path / "m", seed=3)), "cpu")
    v = torch.randn(16, generator=torch.Generator().manual_seed(0)) * 5
    plain = generate(model, tok, EVAL, max_new_tokens=12, batch_size=4)
    with steer(model, 1, v, 0.0):
        zero = generate(model, tok, EVAL, max_new_tokens=12, batch_size=4)
    with steer(model, 1, v, 3.0):
        pushed = generate(model, tok, EVAL, max_new_tokens=12, batch_size=4)
    assert zero == plain
    assert pushed != plain  # the hook does act
    assert generate(model, tok, EVAL, max_new_tokens=12, batch_size=4) == plain  # hook removed


def test_persona_vector_cli_planted_direction_with_rule(planted, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    path, u, pairs, prompts = planted
    out = tmp_path / "out"
    argv = ["persona-vector", "--model", f"planted={path}", "--pairs", str(pairs)]
    argv += ["--eval-prompts", str(prompts), "--layers", "1,2", "--alphas", "0,0.5,2"]
    argv += ["--no-chat-template", "--max-new-tokens", "6", "--rule", "caring", "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("lagdpo: steering table in")

    # The vectors equal the mean difference computed from a direct forward pass
    # (hidden_states[1] is decoder layer 1's output) and point along the planted u.
    vecs = load_vectors(out / "vectors" / "planted.safetensors")
    assert vecs.shape == (2, 16)
    tok = build_tokenizer()
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    diffs = []
    for p, n in zip(POSITIVE, NEGATIVE):
        with torch.no_grad():
            hp = ref(**tok(p, return_tensors="pt"), output_hidden_states=True).hidden_states[1]
            hn = ref(**tok(n, return_tensors="pt"), output_hidden_states=True).hidden_states[1]
        diffs.append(hp[0, -1] - hn[0, -1])
    torch.testing.assert_close(vecs[0], torch.stack(diffs).mean(0), atol=1e-5, rtol=1e-5)
    for v in vecs:
        assert torch.nn.functional.cosine_similarity(v, u, dim=0) > 0.99

    table = pd.read_csv(out / "steering.csv")
    assert list(table.columns) == STEERING_COLUMNS
    assert len(table) == 2 * 2 * 3 and (table["n_scored"] == len(EVAL)).all()
    gens = pd.read_csv(out / "generations.csv", keep_default_na=False)
    unsteered = gens[gens["direction"] == "unsteered"]["reply"].tolist()
    zero = table[table["alpha"] == 0]
    assert (zero["shift"] == 0).all() and (zero["success_rate"] == 0).all()
    for (_, layer, _), g in gens[gens["alpha"] == 0].groupby(["direction", "layer", "alpha"]):
        if layer:  # the α = 0 replies are the unsteered replies, word for word
            assert g["reply"].tolist() == unsteered
    pushed = table[table["alpha"] > 0]
    base_rate = table["unsteered_mean"].iloc[0]
    assert 0 < base_rate < 6  # the unsteered model says 'caring' sometimes
    pos, neg = pushed[pushed["direction"] == "positive"], pushed[pushed["direction"] == "negative"]
    assert (pos["score_mean"] > base_rate).all() and (pos["shift"] > 0).all()
    assert (neg["score_mean"] < base_rate).all() and (neg["shift"] > 0).all()
    assert (pushed["success_rate"] > 0.5).all()
    assert (out / "steering.png").read_bytes()[:4] == b"\x89PNG"


def test_persona_vector_with_harness_judge_over_http(planted, tmp_path, monkeypatch, capsys):
    from fake_openai import FakeOpenAIServer

    path, _, pairs, prompts = planted
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("LAGDPO_TEST_JUDGE_KEY", "sk-test-secret")
    first = tmp_path / "first"
    base = ["persona-vector", "--model", f"planted={path}", "--eval-prompts", str(prompts)]
    base += ["--layers", "2", "--alphas", "1", "--no-chat-template", "--max-new-tokens", "6"]
    assert main([*base, "--pairs", str(pairs), "--rule", "caring", "--out", str(first)]) == 0
    with FakeOpenAIServer(api_key="sk-test-secret") as server:
        # The judge passes E1-E3 exactly when the reply says 'caring' (first matching rule wins).
        server.add_reply('{"E1": 1, "E2": 1, "E3": 1}', " caring", "E1")
        server.add_reply('{"E1": 0, "E2": 0, "E3": 0}', "E1")
        out = tmp_path / "judged"
        argv = [*base, "--vectors", str(first / "vectors" / "planted.safetensors")]
        argv += ["--judge", "fake-judge", "--judge-base-url", server.url]
        argv += ["--judge-api-key-env", "LAGDPO_TEST_JUDGE_KEY", "--dimension", "E"]
        assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
        n_calls = server.count
    gens = pd.read_csv(out / "generations.csv", keep_default_na=False)
    assert n_calls == len(gens) == 3 * len(EVAL)  # unsteered + two directions, one call each
    expected = gens["reply"].str.contains("caring").astype(float)
    np.testing.assert_array_equal(gens["score"].to_numpy(), expected.to_numpy())
    ratings = pd.read_parquet(out / "ratings.parquet")
    assert set(ratings["item"]) == {"E1", "E2", "E3"} and ratings["score"].notna().all()
    table = pd.read_csv(out / "steering.csv").set_index("direction")
    assert table.loc["positive", "score_mean"] == 1.0
    assert table.loc["negative", "score_mean"] == 0.0
    assert "sk-test-secret" not in (out / "ratings.parquet").read_bytes().decode("latin-1")
    assert not (out / "vectors").exists()  # given vectors are not re-saved


def test_persona_vector_bad_input(planted, tmp_path, capsys):
    path, _, pairs, prompts = planted
    bad = tmp_path / "pairs.csv"
    bad.write_text("topic,positive,other\n1,tell me,x\n")

    def run(*extra, layers="2", rule=("--rule", "caring"), pairs_file=pairs):
        argv = ["persona-vector", "--model", str(path), "--eval-prompts", str(prompts)]
        argv += ["--layers", layers, "--pairs", str(pairs_file), "--out", str(tmp_path / "o")]
        rc = main([*argv, *rule, *extra])
        return rc, capsys.readouterr().err.strip()

    rc, err = run(pairs_file=bad)
    assert rc == 2 and len(err.splitlines()) == 1
    assert "'neutral'" in err and "pairs.csv" in err
    rc, err = run(layers="7")
    assert rc == 2 and "outside 1..2" in err
    rc, err = run(rule=("--rule", "(unclosed"))
    assert rc == 2 and "not a valid regular expression" in err
    rc, err = run(rule=("--rule", "x", "--judge", "j"))
    assert rc == 2 and "either --rule" in err
    rc, err = run(rule=("--judge", "j"))
    assert rc == 2 and "--judge needs --dimension" in err
    rc, err = run(rule=())
    assert rc == 2 and "either --rule" in err


def test_vectors_from_pairs_of_different_lengths_match_direct_forward(planted):
    """Persona prompts vs shorter topic-matched neutral prompts, batched with right padding."""
    from transformers import AutoModelForCausalLM

    from lagdpo.posttrain._common import load_model
    from lagdpo.posttrain.persona import persona_vectors

    path = planted[0]
    neutral = [f"topic{i}" if i % 2 else f"about topic{i} please" for i in range(8)]
    model, tok = load_model(str(path), "cpu")
    vecs = persona_vectors(model, tok, POSITIVE, neutral, batch_size=3, chat_template=False)
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    diffs = []
    for p, n in zip(POSITIVE, neutral):
        with torch.no_grad():
            hp = ref(**tok(p, return_tensors="pt"), output_hidden_states=True).hidden_states[1]
            hn = ref(**tok(n, return_tensors="pt"), output_hidden_states=True).hidden_states[1]
        diffs.append(hp[0, -1] - hn[0, -1])
    torch.testing.assert_close(vecs[0], torch.stack(diffs).mean(0), atol=1e-5, rtol=1e-5)
