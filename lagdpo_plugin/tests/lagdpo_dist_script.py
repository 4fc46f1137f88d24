"""Worker for test_lagdpo_distributed: one Lag-DPO run, under torchrun or plain python.

    python lagdpo_dist_script.py MODEL_DIR OUT_DIR GLOBAL_BATCH

Each process trains with per-device batch GLOBAL_BATCH / WORLD_SIZE and writes
OUT_DIR/rank{RANK}.pt with its multipliers, history and final parameters.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lagdpo_testutils import fast_settings, make_records


def main():
    import torch

    from lagdpo.training import train

    model_dir, out_dir, global_batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    # Varied masks so that the per-dimension counts differ between the two ranks' shards.
    records = make_records(
        16, seed=3, masks=[["A", "T", "E", "C"], ["E"], ["T", "C"], ["A"], ["E", "A", "C"]]
    )
    for r in records:
        if "C" in r["mask"]:
            r["reject_C"] = r["golden"]  # keeps L_C above ε so λ_C moves
    settings = fast_settings(
        per_device_train_batch_size=global_batch // world,
        optim="sgd",
        learning_rate=0.5,
        epsilon=0.6,
        lambda_init=0.2,
        dual_lr=0.5,
    )
    if world > 1:
        settings["ddp_backend"] = "gloo"
    result = train(
        "lagdpo", model_dir, records, out_dir / f"model-w{world}", config=settings, max_steps=3
    )
    trainer = result.trainer
    params = torch.cat(
        [
            p.detach().reshape(-1)
            for p in trainer.accelerator.unwrap_model(trainer.model).parameters()
        ]
    )
    torch.save(
        {
            "lambdas": trainer.lambdas.clone(),
            "history": trainer.history,
            "params": params,
            "world": world,
        },
        out_dir / f"w{world}-rank{rank}.pt",
    )


if __name__ == "__main__":
    main()
