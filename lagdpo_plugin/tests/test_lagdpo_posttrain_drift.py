"""`lagdpo drift`: last-prompt-token cosine to the base model per layer, on tiny local Llamas."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lagdpo_testutils import TOPICS, build_tokenizer, save_tiny

from lagdpo.cli import main
from lagdpo.posttrain.drift import DRIFT_COLUMNS, bootstrap_mean

PROMPTS = [f"tell me about {t} please" for t in TOPICS[:6]] + [
    "why is my plan good",
    "how should i feel about the new idea",
    "what is the risk",
]


def _trained_copy(src, dst, steps=4, lr=5e-2):
    """A few AdamW steps with a high learning rate on a next-token loss (a drifted model)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(src)
    tok = build_tokenizer()
    batch = tok(["honest caring story about my plan"] * 4, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(dst)
    tok.save_pretrained(dst)
    return dst


def _direct_cosines(base_path, model_path):
    """Reference: one prompt at a time, transformers' forward with output_hidden_states=True."""
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    base = AutoModelForCausalLM.from_pretrained(base_path).eval()
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    rows = []
    for p in PROMPTS:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            hb = base(**ids, output_hidden_states=True).hidden_states
            hm = model(**ids, output_hidden_states=True).hidden_states
        rows.append(
            [
                torch.nn.functional.cosine_similarity(a[0, -1].double(), b[0, -1].double(), dim=0)
                for a, b in zip(hb, hm)
            ]
        )
    return np.array(rows, dtype=float)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("drift")
    base = save_tiny(root / "base")
    trained = _trained_copy(base, root / "trained")
    prompts = root / "prompts.parquet"
    pd.DataFrame({"question": range(len(PROMPTS)), "prompt": PROMPTS}).to_parquet(prompts)
    return base, trained, prompts


def test_drift_cli_self_is_one_and_trained_matches_direct_forward(models, tmp_path, capsys):
    base, trained, prompts = models
    out = tmp_path / "out"
    rc = main(
        [
            "drift",
            "--base",
            str(base),
            "--model",
            f"self={base}",
            "--model",
            f"trained={trained}",
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--batch-size",
            "4",  # 9 prompts: batches of 4, 4, 1 with right padding
        ]
    )
    assert rc == 0
    assert "lagdpo: drift table in" in capsys.readouterr().out
    table = pd.read_csv(out / "drift.csv")
    assert list(table.columns) == DRIFT_COLUMNS
    n_layers = 3  # embeddings + 2 decoder layers
    assert sorted(table["model"].unique()) == ["self", "trained"]
    assert (table["n_prompts"] == len(PROMPTS)).all()
    own = table[table["model"] == "self"].sort_values("layer")
    assert list(own["layer"]) == list(range(n_layers))
    np.testing.assert_allclose(own[["cosine_mean", "cosine_lo", "cosine_hi"]], 1.0, atol=1e-6)

    moved = table[table["model"] == "trained"].sort_values("layer")
    assert (moved["cosine_mean"] < 1 - 1e-3).any()
    ref = _direct_cosines(base, trained)  # prompts × layers
    np.testing.assert_allclose(moved["cosine_mean"], ref.mean(axis=0), atol=1e-6)
    assert (moved["cosine_lo"] <= moved["cosine_mean"] + 1e-12).all()
    assert (moved["cosine_mean"] <= moved["cosine_hi"] + 1e-12).all()
    per_prompt = pd.read_csv(out / "drift_per_prompt.csv")
    got = per_prompt[per_prompt["model"] == "trained"].pivot(
        index="prompt_index", columns="layer", values="cosine"
    )
    np.testing.assert_allclose(got.to_numpy(), ref, atol=1e-6)
    assert (out / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drift_lora_adapter_and_config_file(models, tmp_path):
    import peft
    from transformers import AutoModelForCausalLM

    base = models[0]
    model = AutoModelForCausalLM.from_pretrained(base)
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=True)
    )
    zero = tmp_path / "adapter_zero"  # B = 0 at init: the adapter leaves the model unchanged
    lora.save_pretrained(zero)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    moved = tmp_path / "adapter_moved"
    lora.save_pretrained(moved)
    for d in (zero, moved):
        cfg = json.loads((d / "adapter_config.json").read_text())
        assert cfg["base_model_name_or_path"] == str(base)
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:4]))
    config = tmp_path / "drift.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "base": str(base),
                "model": [f"zero={zero}", f"moved={moved}"],
                "prompts": str(jsonl),
                "n_boot": 200,
                "plot": False,
            }
        )
    )
    out = tmp_path / "out"
    assert main(["drift", "--config", str(config), "--out", str(out)]) == 0
    table = pd.read_csv(out / "drift.csv")
    zero_rows = table[table["model"] == "zero"]
    np.testing.assert_allclose(zero_rows["cosine_mean"], 1.0, atol=1e-6)
    assert (table[table["model"] == "moved"]["cosine_mean"] < 1 - 1e-3).any()
    assert (table["n_prompts"] == 4).all()
    assert not (out / "drift.png").exists()


def test_drift_bad_input_is_one_line(models, tmp_path, capsys):
    base, _, _ = models
    bad = tmp_path / "bad.csv"
    bad.write_text("question,text\nq1,hello\n")
    rc = main(
        ["drift", "--base", str(base), "--model", str(base), "--prompts", str(bad), "--out", "x"]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "column(s) ['prompt']" in err and "bad.csv" in err
    rc = main(["drift", "--base", str(base), "--prompts", str(bad), "--out", "x"])
    assert rc == 2 and "missing --model" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text('bse = "x"\n')
    assert main(["drift", "--config", str(cfg)]) == 2
    assert "unknown setting 'bse'" in capsys.readouterr().err


def test_drift_entry_point_piped_into_head(models, tmp_path):
    base, trained, prompts = models
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = (
        "set -o pipefail; "
        f"{sys.executable} -m lagdpo.cli drift --base {base} --model {base} --model {trained} "
        f"--prompts {prompts} --out {tmp_path / 'o'} --no-plot | head -n 1"
    )
    proc = subprocess.run(
        ["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("lagdpo: drift table in")
    assert "Traceback" not in proc.stderr


def test_bootstrap_interval_agrees_with_scipy():
    """Percentile bootstrap of the mean vs scipy.stats.bootstrap(method="percentile") (SciPy 1.17);
    both are Monte Carlo, so the limits agree to Monte Carlo error."""
    from scipy import stats

    rng = np.random.default_rng(3)
    x = rng.normal(0.8, 0.1, size=(40, 1))
    mean, lo, hi = bootstrap_mean(x, n_boot=20000, level=0.9, seed=1)
    ref = stats.bootstrap(
        (x[:, 0],),
        np.mean,
        n_resamples=20000,
        confidence_level=0.9,
        method="percentile",
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert mean[0] == pytest.approx(x.mean())
    assert lo[0] == pytest.approx(ref.low, abs=2e-3)
    assert hi[0] == pytest.approx(ref.high, abs=2e-3)
