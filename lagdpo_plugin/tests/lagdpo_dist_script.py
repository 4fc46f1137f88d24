"""Worker for test_lagdpo_distributed: one Lag-DPO run, under torchrun or plain python.

    python lagdpo_dist_script.py MODEL_DIR OUT_DIR GLOBAL_BATCH

Each process trains with per-device batch GLOBAL_BATCH / WORLD_SIZE and writes
OUT_DIR/rank{RANK}.pt with its multipliers, history and final parameters.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lagdpo_testutils import dual_run_records, dual_run_settings


def main():
    import torch

    from lagdpo.training import train

    model_dir, out_dir, global_batch = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    records = dual_run_records()
    settings = dual_run_settings(world, global_batch)
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
