"""Worker for test_lagdpo_accelerate: the runs of issue 13's CPU check, in one process per rank.

    python -m torch.distributed.run --nproc-per-node 2 lagdpo_accel_script.py MODEL REWARD OUT RUNS
    python lagdpo_accel_script.py MODEL REWARD OUT RUNS          # one process

RUNS is a comma-separated subset of: ga, plain, resume, nolambda, precompute, modpo, lora. The
environment is the one `accelerate launch --config_file …` gives (see lagdpo_testutils). Each rank
writes OUT/w{WORLD}-rank{RANK}.pt with what the test compares across ranks and runs.
"""

import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lagdpo_testutils import build_tokenizer, dual_run_records, dual_run_settings

GLOBAL_BATCH = 8


def _records():
    return dual_run_records()


def _settings(world, **extra):
    return dual_run_settings(world, GLOBAL_BATCH, **extra)


def _summary(result):
    import torch

    trainer = result.trainer
    model = trainer.accelerator.unwrap_model(trainer.model)
    params = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    return {
        "history": trainer.history,
        "lambdas": trainer.lambdas.clone(),
        "params": params,
        "ref_model": type(trainer.ref_model).__name__ if trainer.ref_model is not None else None,
    }


def _copy_checkpoint(src: Path, dst: Path, keep_lambda: bool) -> Path:
    from lagdpo.trainer import DUAL_STATE_FILE

    ignore = None if keep_lambda else shutil.ignore_patterns(DUAL_STATE_FILE)
    shutil.copytree(src, dst, ignore=ignore, dirs_exist_ok=True)
    return dst


def _scoring_table(model, dataset, collator):
    """Unsharded reference: every record scored on this rank alone, (N, K + 1)."""
    import torch
    from torch.utils.data import DataLoader

    from lagdpo.trainer import MultiNegDPOTrainer

    cols = ["prompt_ids", "chosen_ids", "rejected_ids", "dim_mask"]
    rows = []
    with torch.no_grad():
        for batch in DataLoader(dataset.select_columns(cols), batch_size=3, collate_fn=collator):
            labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                labels=labels,
                fused_lm_head=True,
                use_cache=False,
            )
            seq = batch["completion_mask"].size(1) - 1
            logps = out.log_probs[:, -seq:].sum(dim=1).float()
            c, r = MultiNegDPOTrainer._unpack(logps, batch)
            rows.append(torch.cat([c.unsqueeze(1), r], 1))
    return torch.cat(rows)


def _precompute_run(model_dir, out, world):
    """Reference log-probs precomputed with the policy: each rank forwards only its share."""
    from transformers import AutoModelForCausalLM

    from lagdpo.config import build_config
    from lagdpo.data import load_personaknob
    from lagdpo.trainer import LagDPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    calls = []
    hook = model.register_forward_hook(lambda m, a, k: calls.append(1), with_kwargs=False)
    args = build_config(
        {**_settings(world), "output_dir": str(out / "pre"), "precompute_ref_log_probs": True}
        | {"precompute_ref_batch_size": 2, "method": "lagdpo"}
    )
    trainer = LagDPOTrainer(
        model=model,
        args=args,
        train_dataset=load_personaknob(_records()),
        processing_class=build_tokenizer(),
    )
    hook.remove()
    import torch

    table = torch.tensor(trainer.train_dataset["ref_logps"])
    model.eval()
    local = _scoring_table(model, trainer.train_dataset, trainer.data_collator)
    return {"forward_calls": len(calls), "table": table, "local": local}


def _modpo_run(model_dir, reward_dir, out, world):
    """MODPO margins from a reward model, sharded and gathered like the reference precompute."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from lagdpo.config import build_config
    from lagdpo.data import load_personaknob
    from lagdpo.trainer import MODPOTrainer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    args = build_config(
        {**_settings(world), "output_dir": str(out / "modpo"), "method": "modpo"}
        | {"modpo_reward_models": {"E": str(reward_dir)}, "precompute_ref_batch_size": 2}
    )
    trainer = MODPOTrainer(
        model=model,
        ref_model=ref,
        args=args,
        train_dataset=load_personaknob(_records()),
        processing_class=build_tokenizer(),
    )
    rewards = torch.tensor(trainer.train_dataset["modpo_rewards"])
    reward_model = AutoModelForCausalLM.from_pretrained(reward_dir, dtype="float32").eval()
    add_fused_lm_head(reward_model)
    local_ref = _scoring_table(trainer.ref_model, trainer.train_dataset, trainer.data_collator)
    local_rm = _scoring_table(reward_model, trainer.train_dataset, trainer.data_collator)
    return {"rewards": rewards, "local": args.beta * (local_rm - local_ref)}


def main():
    import torch

    from lagdpo.errors import ConfigError
    from lagdpo.trainer import LagDPOTrainer
    from lagdpo.training import train

    model_dir, reward_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    runs = sys.argv[4].split(",")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    restored = {}
    original = LagDPOTrainer._restore_dual_state

    def recording_restore(self, checkpoint):
        original(self, checkpoint)
        restored["lambdas"] = self.lambdas.clone()
        restored["history_len"] = len(self.history)

    LagDPOTrainer._restore_dual_state = recording_restore
    res: dict = {"world": world}
    tag = f"w{world}"
    ga_settings = _settings(world, gradient_accumulation_steps=2, save_strategy="steps")
    ga_settings |= {"save_steps": 2, "per_device_train_batch_size": GLOBAL_BATCH // world // 2}
    if "ga" in runs:  # the model as a path: TRL reloads the reference from it
        res["ga"] = _summary(
            train(
                "lagdpo", model_dir, _records(), out / f"{tag}-ga", config=ga_settings, max_steps=3
            )
        )
    if "plain" in runs:
        res["plain"] = _summary(
            train(
                "lagdpo",
                model_dir,
                _records(),
                out / f"{tag}-plain",
                config=_settings(world),
                max_steps=3,
            )
        )
    checkpoint = out / f"{tag}-ga" / "checkpoint-2"
    if "resume" in runs:  # ranks above 0 resume from a node-local copy without the λ file
        if rank == 0:
            resume_dir, resume_from = out / f"{tag}-ga", checkpoint
        else:
            resume_dir = out / f"{tag}-ga-rank{rank}"
            resume_from = _copy_checkpoint(checkpoint, resume_dir / "checkpoint-2", False)
        result = train(
            "lagdpo", model_dir, _records(), resume_dir, config=ga_settings, max_steps=3,
            resume_from_checkpoint=str(resume_from),
        )  # fmt: skip
        res["resume"] = {**_summary(result), "restored": dict(restored)}
    if "nolambda" in runs:  # no λ state anywhere: every rank fails, none hangs
        local = _copy_checkpoint(
            checkpoint, out / f"{tag}-nolambda-rank{rank}" / "checkpoint-2", False
        )
        try:
            train(
                "lagdpo", model_dir, _records(), local.parent, config=ga_settings, max_steps=3,
                resume_from_checkpoint=str(local),
            )  # fmt: skip
            res["nolambda"] = "no error"
        except ConfigError as exc:
            res["nolambda"] = str(exc)
    if "precompute" in runs:
        res["precompute"] = _precompute_run(model_dir, out, world)
    if "modpo" in runs:
        res["modpo"] = _modpo_run(model_dir, reward_dir, out, world)
    if "lora" in runs:  # the ddp-lora pairing: adapter switched off as the reference
        lora = _settings(world, use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
        res["lora"] = _summary(
            train("lagdpo", model_dir, _records(), out / f"{tag}-lora", config=lora, max_steps=1)
        )
    torch.save(res, out / f"{tag}-rank{rank}.pt")


if __name__ == "__main__":
    main()
