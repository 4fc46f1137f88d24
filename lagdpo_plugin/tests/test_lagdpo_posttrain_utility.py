"""`lagdpo utility`: lm-evaluation-harness on a tiny local task shipped in tests/data (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lagdpo_testutils import build_tokenizer, save_tiny

from lagdpo.cli import main
from lagdpo.posttrain import PosttrainError
from lagdpo.posttrain.utility import UTILITY_COLUMNS, paired_difference

TASKS = Path(__file__).resolve().parent / "data" / "tiny_tasks"


def _direct_correct(model_path, jsonl):
    """Reference: score every choice by its summed log-probability after the question (one
    forward per choice, no batching, no lm-eval) and compare the arg-max with the answer."""
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    out = []
    for line in jsonl.read_text().splitlines():
        doc = json.loads(line)
        ctx = tok(doc["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for choice in doc["choices"]:
            cont = tok(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = model(ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, len(ctx) :]
            scores.append(float(logp[len(ctx) - 1 :].gather(1, targets[:, None]).sum()))
        out.append(float(int(np.argmax(scores)) == doc["answer"]))
    return np.array(out)


def _lora(base, tmp_path):
    """A LoRA adapter with non-zero B (it changes the model) and its merged model (reference)."""
    import peft
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    lora.save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    return tmp_path / "adapter", tmp_path / "merged"


def test_utility_cli_matches_direct_count_and_mcnemar(tmp_path, monkeypatch, capsys):
    base = save_tiny(tmp_path / "base", seed=0)
    other = save_tiny(tmp_path / "other", seed=1)
    adapter, merged = _lora(base, tmp_path)
    out = tmp_path / "out"
    monkeypatch.chdir(TASKS)  # the task YAMLs name their data files relative to this folder
    rc = main(
        [
            "utility",
            "--model",
            f"base={base}",
            "--model",
            f"other={other}",
            "--model",
            f"lora={adapter}",
            "--tasks",
            "tiny_suite",
            "--include-path",
            ".",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "4",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith("lagdpo: utility table in")
    table = pd.read_csv(out / "utility.csv")
    assert list(table.columns) == UTILITY_COLUMNS
    assert set(table["task"]) == {"tiny_mc_a", "tiny_mc_b", "tiny_suite"}
    assert (table["metric"] == "acc,none").all()
    ref = {}
    for label, path in (("base", base), ("other", other), ("lora", merged)):
        a = _direct_correct(path, TASKS / "tiny_mc_a.jsonl")
        b = _direct_correct(path, TASKS / "tiny_mc_b.jsonl")
        ref[label] = {"tiny_mc_a": a, "tiny_mc_b": b, "tiny_suite": np.concatenate([a, b])}
    for row in table.itertuples():
        x = ref[row.model][row.task]
        assert row.n_items == len(x)
        assert row.accuracy == pytest.approx(x.mean(), abs=1e-12), (row.model, row.task)
        assert row.accuracy_se == pytest.approx(x.std(ddof=1) / np.sqrt(len(x)))
    group = table[(table["model"] == "other") & (table["task"] == "tiny_suite")].iloc[0]
    assert group["kind"] == "group" and group["n_items"] == 40

    # Paired difference vs the base model; McNemar's exact test from statsmodels 0.15
    # (statsmodels.stats.contingency_tables.mcnemar(table, exact=True)) on the direct counts.
    from statsmodels.stats.contingency_tables import mcnemar

    x, b = ref["other"]["tiny_suite"], ref["base"]["tiny_suite"]
    cells = [[np.sum((x == 1) & (b == 1)), np.sum((x == 1) & (b == 0))],
             [np.sum((x == 0) & (b == 1)), np.sum((x == 0) & (b == 0))]]  # fmt: skip
    assert group["diff"] == pytest.approx((x - b).mean())
    assert group["diff_se"] == pytest.approx((x - b).std(ddof=1) / np.sqrt(len(x)))
    assert group["test"] == "mcnemar-exact"
    assert group["p_value"] == pytest.approx(mcnemar(cells, exact=True).pvalue, rel=1e-9)
    assert group["n_better"] == cells[0][1] and group["n_worse"] == cells[1][0]
    assert group["n_better"] + group["n_worse"] > 0  # the two models do disagree
    own = table[table["model"] == "base"]
    assert (own["diff"] == 0).all() and (own["p_value"] == 1).all()

    items = pd.read_csv(out / "utility_items.csv")
    assert len(items) == 3 * 40 and set(items["value"]) <= {0.0, 1.0}
    raw = json.loads((out / "lm_eval" / "other.json").read_text())
    assert raw["results"]["tiny_mc_a"]["acc,none"] == pytest.approx(
        ref["other"]["tiny_mc_a"].mean()
    )


def test_utility_errors_are_one_line(tmp_path, monkeypatch, capsys):
    base = save_tiny(tmp_path / "base")
    args = ["utility", "--model", str(base), "--include-path", str(TASKS), "--out", "o"]
    # (an unknown task name is reported the same way, after lm-eval indexes its ~15k built-in
    # tasks: 10 s of CPU, too slow for this suite)
    assert main([*args]) == 2
    assert "missing --tasks" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # data_files are relative to tests/data/tiny_tasks, not here
    assert main([*args, "--tasks", "tiny_mc_a", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "lagdpo: error:" in err and "tiny_mc_a.jsonl" in err and "current folder" in err


def test_paired_difference_non_binary_is_a_paired_t_test():
    """Reference: scipy.stats.ttest_rel (SciPy 1.17) on the same pairs."""
    from scipy import stats

    rng = np.random.default_rng(0)
    b = rng.uniform(size=30)
    x = b + rng.normal(0.05, 0.1, size=30)
    res = paired_difference(x, b)
    assert res["test"] == "paired-t"
    assert res["p_value"] == pytest.approx(stats.ttest_rel(x, b).pvalue, rel=1e-12)
    assert res["diff_lo"] < res["diff"] < res["diff_hi"]


def test_items_prefer_exact_match_and_one_filter_per_task():
    """The shape lm-eval 0.4.13 logs for generate_until tasks such as BBH: one sample per
    (document, filter), each with its metric values."""
    from lagdpo.posttrain.utility import _leaves, items_table

    def sample(doc, filt, em):
        return {"doc_id": doc, "filter": filt, "metrics": ["exact_match"], "exact_match": em}

    results = {
        "samples": {
            "bbh_x": [sample(0, "get-answer", 1.0), sample(0, "flex", 0.0),
                      sample(1, "get-answer", 0.0), sample(1, "flex", 1.0)],
            "mc": [{"doc_id": 0, "filter": "none", "metrics": ["acc", "acc_norm"], "acc": 1.0,
                    "acc_norm": 0.0}],
        }
    }  # fmt: skip
    items = items_table(results, "m")
    bbh = items[items["task"] == "bbh_x"]
    assert list(bbh["value"]) == [1.0, 0.0] and set(bbh["metric"]) == {"exact_match,get-answer"}
    assert items[items["task"] == "mc"]["metric"].tolist() == ["acc,none"]
    with pytest.raises(PosttrainError, match=r"--metric 'exact_match' is not reported"):
        items_table(results, "m", metric="exact_match")  # the mc task has acc, acc_norm
    groups = {"bbh": ["bbh_a", "sub"], "sub": ["bbh_b", "bbh_c"]}
    assert _leaves("bbh", groups) == ["bbh_a", "bbh_b", "bbh_c"]
