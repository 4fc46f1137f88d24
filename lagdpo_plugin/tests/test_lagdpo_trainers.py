"""Real TRL training steps on a tiny locally built Llama: every method, λ behaviour, resume, exactness."""

from __future__ import annotations

import csv

import pytest
import torch
from lagdpo_testutils import fast_settings, make_records, save_tiny

from lagdpo.training import LAMBDA_HISTORY_FILE, ablate, train

METHODS = [
    "sft-anchor",
    "sft-combined",
    "multineg-dpo",
    "pcgrad-dpo",
    "sacpo",
    "safe-rlhf",
    "modpo",
    "lagdpo",
]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def _params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def _with_modpo_rewards(records):
    out = []
    for r in records:
        rewards = {"golden": {d: 1.0 for d in "ATEC"}}
        for d in "ATEC":
            if d in r["mask"]:
                rewards[f"reject_{d}"] = {j: (0.0 if j == d else 0.5) for j in "ATEC"}
        out.append({**r, "modpo_rewards": rewards})
    return out


def _logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def _dpo_losses(trainer):
    """Mean of the logged per-dimension losses, step by step."""
    rows = [h for h in trainer.state.log_history if any(k.startswith("loss_") for k in h)]
    return [
        sum(v for k, v in h.items() if k.startswith("loss_"))
        / sum(k.startswith("loss_") for k in h)
        for h in rows
    ]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_loss_goes_down_and_model_loads_back(method, tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = make_records(8)
    if method == "modpo":
        records = _with_modpo_rewards(records)
    if method == "sft-anchor":  # anchor SFT data given as --data
        records = [{"prompt": r["prompt"], "completion": r["golden"]} for r in records]
    before = _params(AutoModelForCausalLM.from_pretrained(tiny_dir))
    out = tmp_path / "out"
    result = train(
        method,
        tiny_dir,
        records,
        out,
        config=fast_settings(per_device_train_batch_size=8),
        max_steps=6,
    )

    if method.startswith("sft"):
        curve = _logged(result.trainer, "loss")
    elif method == "sacpo":
        assert len(result.trainers) == 2  # Peer stage, then Dignity stage
        first, second = (_dpo_losses(t) for t in result.trainers)
        assert first[-1] < first[0] and second[-1] < second[0]
        # the second stage is referenced to the first stage's model: it starts at log 2 again
        assert second[0] == pytest.approx(0.6931, abs=1e-3)
        curve = first
    else:
        curve = _dpo_losses(result.trainer)
    assert len(curve) >= 3
    assert curve[-1] < curve[0] - 0.05, f"{method}: loss did not go down: {curve}"

    reloaded = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)
    after = _params(reloaded)
    assert after.shape == before.shape and not torch.allclose(after, before)
    history = out / LAMBDA_HISTORY_FILE
    assert history.exists() == (method in ("lagdpo", "safe-rlhf"))
    if history.exists():
        rows = list(csv.DictReader(history.open()))
        assert list(rows[0]) == ["step", "dimension", "loss", "lambda"]
        assert {int(r["step"]) for r in rows} == set(range(1, 7))


def _violating_C(n=8):
    """Records whose C rejection equals the golden answer: L_C stays at log 2 whatever the model does."""
    records = make_records(n, masks=[["A", "T", "E", "C"]])
    for r in records:
        r["reject_C"] = r["golden"]
    return records


def test_lambda_rises_for_a_violated_dimension_and_falls_to_zero_for_the_others(tiny_dir, tmp_path):
    settings = fast_settings(
        per_device_train_batch_size=8, epsilon=0.6, lambda_init=0.5, dual_lr=0.5
    )
    result = train(
        "lagdpo", tiny_dir, _violating_C(), tmp_path / "out", config=settings, max_steps=8
    )
    lam = {d: [r["lambda"] for r in result.history if r["dimension"] == d] for d in "ATEC"}
    loss_c = [r["loss"] for r in result.history if r["dimension"] == "C"]
    assert all(abs(v - 0.693147) < 1e-4 for v in loss_c)  # C stays above ε = 0.6
    assert all(b > a for a, b in zip(lam["C"], lam["C"][1:]))  # ... so λ_C rises every step
    assert lam["C"][-1] == pytest.approx(0.5 + 8 * 0.5 * (0.693147 - 0.6), abs=1e-3)
    for d in "ATE":  # the learnable dimensions drop below ε and their multipliers reach 0
        assert lam[d][-1] == 0.0, (d, lam[d])
    trainer = result.trainer
    assert trainer.lambdas.tolist()[:3] == [0.0, 0.0, 0.0]
    assert _logged(trainer, "lambda_C")[-1] == pytest.approx(lam["C"][-1])


def test_lagdpo_with_large_epsilon_equals_multineg(tiny_dir, tmp_path):
    records = make_records(8)
    lag = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "lag",
        config=fast_settings(epsilon=100.0, lambda_init=0.0),
        max_steps=4,
    )
    multi = train(
        "multineg-dpo", tiny_dir, records, tmp_path / "multi", config=fast_settings(), max_steps=4
    )
    assert all(r["lambda"] == 0.0 for r in lag.history)
    assert torch.equal(_params(lag.trainer.model), _params(multi.trainer.model))


def test_lagdpo_differs_from_multineg_when_lambda_is_active(tiny_dir, tmp_path):
    records = _violating_C()
    lag = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "lag",
        config=fast_settings(epsilon=0.6, lambda_init=1.0),
        max_steps=3,
    )
    multi = train(
        "multineg-dpo", tiny_dir, records, tmp_path / "multi", config=fast_settings(), max_steps=3
    )
    assert not torch.allclose(_params(lag.trainer.model), _params(multi.trainer.model))


def test_gradient_accumulation_gives_the_same_step_as_one_big_batch(tiny_dir, tmp_path):
    # SGD, so that the comparison sees the gradients themselves: Adam's normalisation blows float32
    # rounding in near-zero gradient entries up to ~1e-6 in the parameters.
    records = make_records(8)
    cfg = {"epsilon": 0.6, "lambda_init": 0.3, "dual_lr": 0.5, "optim": "sgd", "learning_rate": 0.5}
    big = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "big",
        config=fast_settings(per_device_train_batch_size=8, **cfg),
        max_steps=3,
    )
    acc = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "acc",
        config=fast_settings(per_device_train_batch_size=4, gradient_accumulation_steps=2, **cfg),
        max_steps=3,
    )
    assert torch.allclose(_params(big.trainer.model), _params(acc.trainer.model), atol=1e-6, rtol=0)
    assert torch.allclose(big.trainer.lambdas, acc.trainer.lambdas, atol=1e-9)


def test_precomputed_reference_logps_match_reference_model(tiny_dir, tmp_path):
    records = make_records(8)
    live = train(
        "lagdpo", tiny_dir, records, tmp_path / "live", config=fast_settings(), max_steps=3
    )
    pre = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "pre",
        config=fast_settings(precompute_ref_log_probs=True),
        max_steps=3,
    )
    assert "ref_logps" in pre.trainer.train_dataset.column_names
    assert torch.allclose(_params(live.trainer.model), _params(pre.trainer.model), atol=1e-5)
    assert [r["loss"] for r in live.history] == pytest.approx(
        [r["loss"] for r in pre.history], abs=1e-5
    )


def test_resume_restores_lambda_and_continues_identically(tiny_dir, tmp_path):
    records = _violating_C()
    settings = fast_settings(
        epsilon=0.6, lambda_init=0.3, dual_lr=0.5, save_strategy="steps", save_steps=2
    )
    straight = train(
        "lagdpo", tiny_dir, records, tmp_path / "straight", config=settings, max_steps=4
    )
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    assert (checkpoint / "lagdpo_state.json").exists()

    resumed = train(
        "lagdpo",
        tiny_dir,
        records,
        tmp_path / "resumed",
        config=settings,
        max_steps=4,
        resume_from_checkpoint=str(checkpoint),
    )
    trainer = resumed.trainer
    assert trainer.state.global_step == 4
    # the steps before the checkpoint come from the saved state, the rest were trained again
    assert [r["step"] for r in resumed.history] == [r["step"] for r in straight.history]
    assert [r["lambda"] for r in resumed.history] == pytest.approx(
        [r["lambda"] for r in straight.history], abs=1e-7
    )
    assert torch.allclose(trainer.lambdas, straight.trainer.lambdas, atol=1e-7)
    assert torch.allclose(_params(trainer.model), _params(straight.trainer.model), atol=1e-6)


def test_resume_without_restoring_lambda_would_differ(tiny_dir, tmp_path):
    """Guard for the test above: λ at the checkpoint is not its initial value, so restoring it matters."""
    records = _violating_C()
    settings = fast_settings(
        epsilon=0.6, lambda_init=0.3, dual_lr=0.5, save_strategy="steps", save_steps=2
    )
    straight = train("lagdpo", tiny_dir, records, tmp_path / "s", config=settings, max_steps=2)
    assert straight.trainer.lambdas[3].item() > 0.3 + 0.05


def test_lora_training_writes_a_merged_model(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    train(
        "lagdpo",
        tiny_dir,
        make_records(8),
        out,
        config=fast_settings(use_peft=True, lora_r=4, lora_alpha=8, learning_rate=5e-2),
        max_steps=3,
    )
    assert (out / "adapter" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert not torch.allclose(_params(merged), _params(base))
    assert (out / LAMBDA_HISTORY_FILE).exists()


def test_ablation_grid_is_one_call(tiny_dir, tmp_path):
    summary = ablate(
        tiny_dir,
        make_records(8),
        tmp_path / "grid",
        epsilons=[0.3, 5.0],
        dual_lrs=[0.5],
        config=fast_settings(),
        max_steps=2,
    )
    rows = list(csv.DictReader(summary.open()))
    assert {(r["epsilon"], r["dual_lr"]) for r in rows} == {("0.3", "0.5"), ("5.0", "0.5")}
    lam_big_eps = [float(r["lambda"]) for r in rows if r["epsilon"] == "5.0"]
    assert lam_big_eps == [0.0] * 4  # a loose tolerance leaves λ at 0
    assert (tmp_path / "grid" / "eps0.3_dual0.5" / LAMBDA_HISTORY_FILE).exists()


def test_modpo_margins_from_a_reward_model_are_its_implicit_rewards(tiny_dir, tmp_path):
    """With `modpo_reward_models` (no `modpo_rewards` column) the margins are computed once before
    training as β·(log π_j(y|x) − log π_ref(y|x)); checked here against plain transformers forward
    passes over the trainer's own token ids."""
    from lagdpo_testutils import save_tiny
    from transformers import AutoModelForCausalLM

    # a different tiny model as reward model A
    reward_dir = save_tiny(tmp_path / "reward_A", seed=1)
    beta = 0.1
    settings = fast_settings(
        per_device_train_batch_size=6, beta=beta, modpo_reward_models={"A": str(reward_dir)}
    )
    result = train(
        "modpo", tiny_dir, make_records(6), tmp_path / "out", config=settings, max_steps=2
    )
    ds = result.trainer.train_dataset
    table = torch.tensor(ds["modpo_rewards"])  # (records, golden + 4 rejections, 4 reward models)
    assert torch.all(table[:, :, 1:] == 0)  # no reward model for T, E, C: no margin from them
    assert table[:, :, 0].abs().max() > 1e-3

    ref = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    reward = AutoModelForCausalLM.from_pretrained(reward_dir).eval()

    def logp(model, prompt, completion):
        ids = torch.tensor([list(prompt) + list(completion)])
        with torch.no_grad():
            logits = model(ids).logits.float()[0, :-1]
        lp = torch.log_softmax(logits, -1)[torch.arange(ids.shape[1] - 1), ids[0, 1:]]
        return lp[len(prompt) - 1 :].sum().item()

    for i in range(len(ds)):
        ex = ds[i]
        rows = [ex["chosen_ids"]] + [
            ex["rejected_ids"][k] if ex["dim_mask"][k] else None for k in range(4)
        ]
        for row, completion in enumerate(rows):
            if completion is None:
                continue
            expected = beta * (
                logp(reward, ex["prompt_ids"], completion) - logp(ref, ex["prompt_ids"], completion)
            )
            assert table[i, row, 0].item() == pytest.approx(expected, abs=1e-4)


def test_sequence_logps_are_summed_in_float32_when_the_model_outputs_bf16(tiny_dir, tmp_path):
    """Under FSDP2 with bf16, accelerate's `output_dtype=bf16` casts the fused head's per-token
    log-probs to bf16 (seen on an H100: step-1 losses 0.69140625 = bf16(ln 2)). The same cast is
    made here by a forward hook; summed in float32, policy = reference gives margin 0 and the
    step-1 loss is float32 ln 2, where a bf16 sum and loss gave 0.69140625."""
    import math

    from transformers import AutoModelForCausalLM, AutoTokenizer

    def to_bf16(module, args, output):
        if getattr(output, "log_probs", None) is not None:
            output.log_probs = output.log_probs.to(torch.bfloat16)
        return output

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    model.register_forward_hook(to_bf16)
    settings = fast_settings(learning_rate=0.0)
    result = train("lagdpo", model, make_records(8), tmp_path / "out", config=settings,
                   max_steps=1, tokenizer=AutoTokenizer.from_pretrained(tiny_dir))
    first = next(h for h in result.trainer.state.log_history if "loss_A" in h)
    for d in "ATEC":
        assert first[f"loss_{d}"] == pytest.approx(math.log(2), abs=1e-7)
