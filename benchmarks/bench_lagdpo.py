"""Time per optimizer step and tokens processed: Lag-DPO vs Multi-Neg DPO vs TRL's DPO on flattened pairs.

    python benchmarks/bench_lagdpo.py [--records 256] [--batch 8] [--hidden 128] [--layers 4] [--steps 30]

All three see the same PersonaKnob records. Lag-DPO and Multi-Neg DPO take ``--batch`` records per
optimizer step and forward each chosen completion once plus every active rejection. TRL's
`DPOTrainer` gets the records flattened to (prompt, chosen, rejected) pairs, one per active
rejection, with a batch of ``--batch × (mean active dimensions)`` pairs so that an optimizer step
covers the same records; it forwards the chosen completion once per rejection. Everything runs on
CPU with a small Llama built locally (no downloads). The first two steps are warm-up and not timed.

Goals (issue #4): Lag-DPO within 10% of Multi-Neg DPO per step, and faster than the flattened pairs.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

# The tiny tokenizer and record generator the plug-in's tests use.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lagdpo_plugin" / "tests"))


def _model(vocab_size: int, hidden: int, layers: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            intermediate_size=hidden * 2,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    )


def _records(n: int, words: int):
    import random

    from lagdpo_testutils import WORDS, make_records

    rng = random.Random(0)
    records = make_records(n, seed=1)
    for r in records:  # longer completions, closer to real answers
        for key in ["golden"] + [f"reject_{d}" for d in "ATEC"]:
            if r[key]:
                r[key] = r[key] + " " + " ".join(rng.choices(WORDS, k=words))
    return records


class _StepTimer:
    def __init__(self):
        from transformers import TrainerCallback

        timer = self

        class CB(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                timer._t = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                timer.times.append(time.perf_counter() - timer._t)

        self.times: list[float] = []
        self.callback = CB()


def run(args) -> list[dict]:
    import torch
    from lagdpo.config import LagDPOConfig
    from lagdpo.data import flatten_to_pairs, load_personaknob
    from lagdpo.trainer import LagDPOTrainer, MultiNegDPOTrainer
    from lagdpo_testutils import build_tokenizer
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(args.threads)
    tok = build_tokenizer()
    base = _model(len(tok), args.hidden, args.layers)
    data = load_personaknob(_records(args.records, args.words))
    pairs = flatten_to_pairs(data)
    mean_active = len(pairs) / len(data)
    common = {
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "logging_steps": 1,
        "save_strategy": "no",
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    rows = []
    out = tempfile.mkdtemp()
    for name in ("lagdpo", "multineg-dpo", "trl-dpo-pairs"):
        model, ref = copy.deepcopy(base), copy.deepcopy(base)
        timer = _StepTimer()
        if name == "trl-dpo-pairs":
            batch = max(1, round(args.batch * mean_active))
            cfg = DPOConfig(output_dir=f"{out}/{name}", per_device_train_batch_size=batch, **common)
            trainer = DPOTrainer(
                model=model,
                ref_model=ref,
                args=cfg,
                train_dataset=pairs,
                processing_class=tok,
                callbacks=[timer.callback],
            )
        else:
            batch = args.batch
            cls = LagDPOTrainer if name == "lagdpo" else MultiNegDPOTrainer
            cfg = LagDPOConfig(
                output_dir=f"{out}/{name}", method=name, per_device_train_batch_size=batch, **common
            )
            trainer = cls(
                model=model,
                ref_model=ref,
                args=cfg,
                train_dataset=data,
                processing_class=tok,
                callbacks=[timer.callback],
            )
        trainer.train()
        timed = timer.times[2:]
        tokens = trainer._total_train_tokens / len(timer.times)
        rows.append(
            {
                "method": name,
                "batch": batch,
                "steps_timed": len(timed),
                "s_per_step_median": statistics.median(timed),
                "s_per_step_mean": statistics.fmean(timed),
                "tokens_per_step": tokens,
            }
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--batch", type=int, default=8, help="records per optimizer step")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--words", type=int, default=40, help="extra words per completion")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2)))
    args = p.parse_args(argv)
    rows = run(args)
    ref = {r["method"]: r for r in rows}
    print(
        f"{'method':<16}{'batch':>6}{'s/step (median)':>17}{'s/step (mean)':>15}{'tokens/step':>13}"
    )
    for r in rows:
        print(
            f"{r['method']:<16}{r['batch']:>6}{r['s_per_step_median']:>17.4f}{r['s_per_step_mean']:>15.4f}"
            f"{r['tokens_per_step']:>13.0f}"
        )
    lag, multi, pairs = (
        ref[m]["s_per_step_median"] for m in ("lagdpo", "multineg-dpo", "trl-dpo-pairs")
    )
    print(f"\nLag-DPO / Multi-Neg DPO time per step: {lag / multi:.3f} (goal ≤ 1.10)")
    print(f"Lag-DPO / TRL DPO on flattened pairs:  {lag / pairs:.3f} (goal < 1)")
    print(
        f"tokens per step, flattened pairs / multi-negative: "
        f"{ref['trl-dpo-pairs']['tokens_per_step'] / ref['lagdpo']['tokens_per_step']:.2f}"
    )


if __name__ == "__main__":
    main()
