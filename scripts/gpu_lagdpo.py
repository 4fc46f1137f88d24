#!/usr/bin/env python
"""Issue 13's GPU check of lagdpo-plugin: real bf16 training steps under every shipped accelerate
config, on one CUDA GPU, with locally built tiny models (no downloads).

    python scripts/gpu_lagdpo.py --out DIR [--configs zero3,fsdp] [--steps 5] [--budget 190]

Per config one ``accelerate launch --config_file CONFIG --num_processes 1 --mixed_precision bf16``
(this script with ``--worker``) trains, one after another in that process:

* zero3: Lag-DPO (the reference reloaded from the model path and partitioned like the policy),
  Lag-DPO with precomputed reference log-probs (DeepSpeed inference engine), MODPO with a reward
  model loaded and partitioned the same way;
* fsdp: Lag-DPO, and Lag-DPO with precomputed reference log-probs;
* zero2, single-gpu: Lag-DPO; ddp-lora: Lag-DPO on a LoRA adapter.

The model is a 2-layer Llama with hidden size 256, so ZeRO-3 really partitions it (DeepSpeed keeps
tensors under 10 × hidden = 2,560 elements whole; these weights have 65,536). Asserted per run:
at step 1, before any update, every dimension's loss is ln 2 (policy = reference; within 1e-5
where the reference is scored in the policy's batch, 2e-2 where it was precomputed in other
batch shapes in bf16); under zero3 the policy's and the reference's weights are partitioned.
MODPO's reward model is the policy's own weights, so its margins are 0 and ln 2 holds too.

Writes DIR/gpu_lagdpo.json: per config and run the status ("pass", "fail: …", or "skipped:
<package> not installed"), s/step (mean of steps 2…N), peak GPU memory (GiB) and the step-1
losses; the worker files go to DIR/work/. Exit status 0 when nothing failed, 1 otherwise, 2 (one
line) without a CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = ROOT / "lagdpo_plugin" / "src"
PLUGIN_TESTS = ROOT / "lagdpo_plugin" / "tests"
REPORT = "gpu_lagdpo.json"
# in order of importance: what runs first when the time budget is short
CONFIGS = ("zero3", "fsdp", "zero2", "ddp-lora", "single-gpu")
RUNS = {
    "zero3": ("lagdpo", "lagdpo-precompute", "modpo"),
    "fsdp": ("lagdpo", "lagdpo-precompute"),
    "zero2": ("lagdpo",),
    "ddp-lora": ("lagdpo-lora",),
    "single-gpu": ("lagdpo",),
}
NEEDS = {"zero3": ("deepspeed",), "zero2": ("deepspeed",), "ddp-lora": ("peft",)}
LN2 = math.log(2)
TOLERANCE = {"lagdpo-precompute": 2e-2, "modpo": 1e-4}
EXACT = 1e-5
DIMS = ("A", "T", "E", "C")


# --- planning and judging (no GPU needed) -------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gpu_lagdpo.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for gpu_lagdpo.json (created)")
    p.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    p.add_argument("--steps", type=int, default=5, help="optimizer steps per run (≥ 2)")
    p.add_argument("--budget", type=float, default=190.0, help="seconds for all launches")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    # the script's own CPU test: accelerate launch --cpu, no bf16 (never for figures)
    p.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        if args.out is None:
            p.error("--out DIR is required")
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown or not configs:
            p.error(f"--configs: unknown {', '.join(unknown) or '(none)'}; use {','.join(CONFIGS)}")
        if args.steps < 2:
            p.error(f"--steps {args.steps}: need at least 2 (s/step is taken over steps 2…N)")
        args.configs = configs
    return args


def plan(configs: list[str], find_spec=importlib.util.find_spec) -> list[dict]:
    """One entry per config: its runs, or why it is skipped (a package this machine lacks)."""
    entries = []
    for config in configs:
        missing = [m for m in NEEDS.get(config, ()) if find_spec(m) is None]
        skip = f"skipped: {', '.join(missing)} not installed" if missing else None
        entries.append({"config": config, "runs": list(RUNS[config]), "skip": skip})
    return entries


def judge(config: str, run: str, record: dict) -> str:
    """The run's status: ``pass``, or ``fail: why`` from its worker record."""
    if record.get("error"):
        return f"fail: {record['error']}"
    losses = record.get("first_step_losses") or {}
    if sorted(losses) != sorted(DIMS):
        return f"fail: step-1 losses logged for {sorted(losses)}, expected {list(DIMS)}"
    tol = TOLERANCE.get(run, EXACT)
    devs = {d: abs(v - LN2) if math.isfinite(v) else math.inf for d, v in losses.items()}
    dim = max(devs, key=devs.get)
    worst = devs[dim]
    if worst > tol:
        return f"fail: step-1 loss_{dim} = {losses[dim]:.6f}, not ln 2 (|Δ| {worst:.1e} > {tol:g})"
    if config == "zero3":
        for part in ("policy", "reference"):
            flag = record.get(f"{part}_partitioned")
            if flag is False:
                return f"fail: the {part}'s weights were not partitioned by ZeRO-3"
    return "pass"


def run_settings(run: str, steps: int, bf16: bool, model_dir: str) -> tuple[str, dict]:
    """(method, settings) of one run."""
    settings = {
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-4,
        "optim": "adamw_torch",
        "lr_scheduler_type": "constant",
        "max_steps": steps,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "bf16": bf16,
        "gradient_checkpointing": True,
        "max_length": 128,
        "beta": 0.1,
        "seed": 0,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    if run == "lagdpo-precompute":
        settings["precompute_ref_log_probs"] = True
    if run == "lagdpo-lora":
        settings.update(use_peft=True, lora_r=8, lora_alpha=16, lora_dropout=0.0)
    if run == "modpo":
        settings["modpo_reward_models"] = {"E": model_dir}  # the policy's weights: margins 0
        return "modpo", settings
    return "lagdpo", settings


def write_report(out: Path, report: dict) -> Path:
    path = out / REPORT
    try:
        sys.path.insert(0, str(ROOT))
        from irtpeer._io import atomic_write_json

        return atomic_write_json(report, path)
    except ImportError:  # the plug-in's machine without irtpeer: same atomic write by hand
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        os.replace(tmp, path)
        return path


# --- fixtures and launches ---------------------------------------------------------------------
def build_fixtures(work: Path) -> dict:
    """A tiny Llama (hidden 256) with its tokenizer, and 32 PersonaKnob records, all local."""
    sys.path.insert(0, str(PLUGIN_TESTS))
    import torch
    from lagdpo_testutils import VOCAB, build_tokenizer, make_records
    from transformers import LlamaConfig, LlamaForCausalLM

    model_dir = work / "tiny-256"
    if not (model_dir / "config.json").exists():
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=len(VOCAB), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
            pad_token_id=0, bos_token_id=2, eos_token_id=3, tie_word_embeddings=False,
        )  # fmt: skip
        LlamaForCausalLM(config).save_pretrained(model_dir)
        build_tokenizer().save_pretrained(model_dir)
    data = work / "personaknob.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in make_records(32, seed=1)) + "\n")
    return {"model": str(model_dir), "data": str(data)}


def launch(config: str, spec: Path, timeout: float, cpu: bool) -> tuple[int | None, str]:
    """``accelerate launch`` of the worker under a shipped config; (exit status, output tail)."""
    sys.path.insert(0, str(PLUGIN_SRC))
    from lagdpo.launch import accelerate_config_path

    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    cmd += ["--config_file", str(accelerate_config_path(config)), "--num_processes", "1"]
    cmd += ["--main_process_port", "0", "--mixed_precision", "no" if cpu else "bf16"]
    cmd += ["--cpu"] if cpu else []
    cmd += [str(Path(__file__).resolve()), "--worker", str(spec)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TQDM_DISABLE="1")
    paths = [str(PLUGIN_SRC), str(PLUGIN_TESTS), str(ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        return None, tail.decode(errors="replace") if isinstance(tail, bytes) else tail
    return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def run_config(entry: dict, fixtures: dict, work: Path, args, deadline: float) -> list[dict]:
    config, rows = entry["config"], []
    if entry["skip"]:
        return [{"config": config, "run": run, "status": entry["skip"]} for run in entry["runs"]]
    left = deadline - time.monotonic()
    if left < 20:
        note = f"fail: not run, the time budget ({args.budget:g} s) was spent"
        return [{"config": config, "run": run, "status": note} for run in entry["runs"]]
    results = work / f"{config}.results.json"
    results.unlink(missing_ok=True)
    spec = work / f"{config}.spec.json"
    spec.write_text(json.dumps({**fixtures, "config": config, "runs": entry["runs"],
                                "steps": args.steps, "bf16": not args.cpu,
                                "out": str(work / config), "results": str(results)}))  # fmt: skip
    t0 = time.monotonic()
    rc, tail = launch(config, spec, min(left, 240.0), args.cpu)
    done = json.loads(results.read_text()) if results.exists() else {}
    for run in entry["runs"]:
        record = done.get(run)
        if record is None:
            why = "timed out" if rc is None else f"exit {rc}"
            status = f"fail: the launch ended ({why}) before this run: {_last_line(tail)}"
            record = {}
        else:
            status = judge(config, run, record)
        rows.append({"config": config, "run": run, "status": status, **record})
    rows[-1]["launch_seconds"] = round(time.monotonic() - t0, 1)
    return rows


def machine() -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["card"] = torch.cuda.get_device_name(0)
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "trl", "accelerate", "peft", "deepspeed"):
        try:
            info[name] = version(name)
        except PackageNotFoundError:
            info[name] = None
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_lagdpo: no CUDA device (torch.cuda.is_available() is False); this check "
              "needs one NVIDIA GPU: nothing run", file=sys.stderr)  # fmt: skip
        return 2
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    fixtures = build_fixtures(work)
    rows = []
    for entry in plan(args.configs):
        rows += run_config(entry, fixtures, work, args, deadline)
        done = [f"{r['run']} {r['status']}" for r in rows if r["config"] == entry["config"]]
        print(f"gpu_lagdpo: {entry['config']}: {'; '.join(done)}", flush=True)
    passed = not any(r["status"].startswith("fail") for r in rows)
    report = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": machine(),
        "mixed_precision": "no (CPU self-test)" if args.cpu else "bf16",
        "steps": args.steps,
        "passed": passed,
        "runs": rows,
    }
    write_report(args.out, report)
    return 0 if passed else 1


# --- the worker (inside accelerate launch) ----------------------------------------------------
def _partitioned(module) -> bool | None:
    """Whether ZeRO-3 manages this module's largest weight as a partition rather than keeping it
    whole on every rank (None: not a ZeRO-3 module)."""
    params = list(getattr(module, "module", module).parameters())
    if not params or not hasattr(params[0], "ds_id"):
        return None
    biggest = max(params, key=lambda p: getattr(p, "ds_numel", p.numel()))
    return hasattr(biggest, "ds_id") and not getattr(biggest, "ds_persist", False)


def _first_step_losses(log_history: list[dict]) -> dict:
    for entry in log_history:
        if entry.get("step") == 1 and f"loss_{DIMS[0]}" in entry:
            return {d: float(entry[f"loss_{d}"]) for d in DIMS if f"loss_{d}" in entry}
    return {}


def worker_run(spec: dict, run: str) -> dict:
    import torch
    from lagdpo.training import train
    from transformers import TrainerCallback

    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter())

    method, settings = run_settings(run, spec["steps"], spec["bf16"], spec["model"])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = Path(spec["out"]) / run
    result = train(method, spec["model"], spec["data"], out, config=settings,
                   callbacks=[StepTimes()])  # fmt: skip
    trainer = result.trainer
    record = {
        "first_step_losses": _first_step_losses(trainer.state.log_history),
        "s_per_step": round((times[-1] - times[0]) / (len(times) - 1), 4)
        if len(times) > 1
        else None,
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
        if torch.cuda.is_available()
        else None,
        "policy_partitioned": _partitioned(trainer.model),
        "reference_partitioned": _partitioned(trainer.ref_model)
        if trainer.ref_model is not None
        else None,
    }
    if run == "modpo":
        margins = torch.tensor(trainer.train_dataset["modpo_rewards"])
        record["max_abs_modpo_margin"] = float(margins.abs().max())
    return record


def worker(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    done: dict = {}
    results = Path(spec["results"])
    for run in spec["runs"]:
        try:
            done[run] = worker_run(spec, run)
        except Exception as exc:  # noqa: BLE001 - any failure is this run's result; the next goes
            message = " ".join(str(exc).split())[:400]
            done[run] = {"error": f"{type(exc).__name__}: {message}"}
        results.write_text(json.dumps(done, indent=1))  # after each run: survives a crash
    return 0


if __name__ == "__main__":
    sys.exit(main())
