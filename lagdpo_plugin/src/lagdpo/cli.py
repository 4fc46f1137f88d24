"""`lagdpo` command line: a thin layer over `lagdpo.training`.

    lagdpo train --method METHOD --model PATH --data PATH --output-dir DIR [--max-steps N]
                 [--config FILE|NAME] [--resume [CHECKPOINT]] [--eval-data PATH]
                 [--accelerate-config NAME --num-processes N] [--SETTING VALUE ...]
    lagdpo ablate --model PATH --data PATH --output-dir DIR --epsilons 0.3,0.5,0.7 --dual-lrs 0.01,0.05,0.2
    lagdpo configs            # shipped training and accelerate configs
    lagdpo validate PATH      # check a PersonaKnob file
    lagdpo utility --model PATH [--model PATH ...] --tasks mmlu,bbh --out DIR [--limit N]
    lagdpo drift --base PATH --model PATH [--model PATH ...] --prompts FILE --out DIR
    lagdpo persona-vector --model PATH --pairs FILE --eval-prompts FILE --layers L --out DIR
                          (--rule REGEX | --judge MODEL --judge-base-url URL --dimension E)

Any ``--setting value`` not listed above overrides a `LagDPOConfig` field (dashes or
underscores; the value is parsed as YAML, so ``--dimension-weights [1,1,2,2]`` works). Command-line
values win over the config file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

import yaml

from .errors import LagDPOError

METHOD_CHOICES = (
    "sft-anchor",
    "sft-combined",
    "multineg-dpo",
    "pcgrad-dpo",
    "sacpo",
    "safe-rlhf",
    "modpo",
    "lagdpo",
)


def _parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """``--key value`` / ``--key=value`` / ``--flag`` pairs into a settings dict (values parsed as YAML)."""
    from .config import config_field_names

    known = config_field_names()
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--"):
            raise LagDPOError(f"unexpected argument {token!r}; settings are given as --name value.")
        name, _, value = token[2:].partition("=")
        key = name.replace("-", "_")
        if not _:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                value = tokens[i + 1]
                i += 1
            else:
                value = "true"
        if key not in known:
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
            raise LagDPOError(f"unknown setting --{name}{hint}; see `lagdpo train --help-config`.")
        overrides[key] = yaml.safe_load(value)
        i += 1
    return overrides


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lagdpo train", description="Train a model with Lag-DPO or a baseline."
    )
    p.add_argument("--method", required=True, choices=METHOD_CHOICES)
    p.add_argument(
        "--model", required=True, help="Path of the model to train (a transformers checkpoint)."
    )
    p.add_argument(
        "--data",
        required=True,
        help="PersonaKnob CSV/JSON/JSONL or a saved dataset (SFT data for sft-anchor).",
    )
    p.add_argument(
        "--output-dir",
        required=True,
        help="Where the trained model, tokenizer and lambda_history.csv go.",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="Stop after N optimizer steps (overrides epochs).",
    )
    p.add_argument(
        "--config",
        default=None,
        help="YAML settings file, or the name of a shipped one (e.g. paper).",
    )
    p.add_argument("--eval-data", default=None, help="Optional held-out PersonaKnob data.")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        help="Resume from CHECKPOINT, or from the last checkpoint in --output-dir if no path is given.",
    )
    p.add_argument(
        "--accelerate-config",
        default=None,
        help="Launch through `accelerate launch` with this shipped config (ddp-lora, zero2, zero3, fsdp) or file.",
    )
    p.add_argument(
        "--num-processes", type=int, default=None, help="Processes for --accelerate-config."
    )
    p.add_argument(
        "--print-command",
        action="store_true",
        help="With --accelerate-config: print the launch command only.",
    )
    return p


def _strip_launch_args(argv: list[str]) -> list[str]:
    out, skip = [], False
    for i, token in enumerate(argv):
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in ("--accelerate-config", "--num-processes"):
            skip = "=" not in token
            continue
        if name == "--print-command":
            continue
        out.append(token)
    return out


def _settings_mixed_precision(config, overrides) -> str | None:
    """``bf16`` or ``no`` when the training settings set bf16, so the launcher agrees with them."""
    from .config import coerce_settings
    from .training import load_settings

    settings = load_settings(config, overrides)
    if "bf16" not in settings:
        return None  # the accelerate config decides, and train() follows it
    return "bf16" if coerce_settings({"bf16": settings["bf16"]})["bf16"] else "no"


def cmd_train(argv: list[str]) -> int:
    if "--help-config" in argv:
        return cmd_help_config()
    args, rest = _train_parser().parse_known_args(argv)
    overrides = _parse_overrides(rest)
    if args.accelerate_config:
        from .launch import check_before_launch, launch_command
        from .training import load_settings

        cmd = launch_command(
            args.accelerate_config,
            args.num_processes,
            _strip_launch_args(argv),
            mixed_precision=_settings_mixed_precision(args.config, overrides),
        )
        if args.print_command:
            print(" ".join(cmd))
            return 0
        check_before_launch(
            args.accelerate_config, args.method, load_settings(args.config, overrides)
        )
        return subprocess.call(cmd)
    from .training import LAMBDA_HISTORY_FILE, load_settings, train

    settings = load_settings(args.config, overrides)
    result = train(
        args.method,
        args.model,
        args.data,
        args.output_dir,
        config=settings,
        max_steps=args.max_steps,
        eval_data=args.eval_data,
        resume_from_checkpoint=args.resume,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"lagdpo: {args.method} model written to {result.output_dir}")
        if (result.output_dir / LAMBDA_HISTORY_FILE).exists():
            print(f"lagdpo: multiplier history in {result.output_dir / LAMBDA_HISTORY_FILE}")
    return 0


def _float_list(text: str) -> list[float]:
    return [float(x) for x in text.replace(" ", "").split(",") if x]


def cmd_ablate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lagdpo ablate", description="The paper's ε × η_λ grid for Lag-DPO."
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--epsilons", type=_float_list, default=[0.3, 0.5, 0.7])
    p.add_argument("--dual-lrs", type=_float_list, default=[0.005, 0.05, 0.5])
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--config", default=None)
    args, rest = p.parse_known_args(argv)
    from .training import ablate, load_settings

    summary = ablate(
        args.model,
        args.data,
        args.output_dir,
        epsilons=args.epsilons,
        dual_lrs=args.dual_lrs,
        config=load_settings(args.config, _parse_overrides(rest)),
        max_steps=args.max_steps,
    )
    print(f"lagdpo: ablation summary in {summary}")
    return 0


def cmd_configs(argv: list[str]) -> int:
    from .launch import ACCELERATE_CONFIG_DIR, list_accelerate_configs
    from .training import CONFIG_DIR

    print("training configs (--config NAME):")
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        print(f"  {path.stem:<16} {path}")
    print("accelerate configs (--accelerate-config NAME):")
    for name in list_accelerate_configs():
        print(f"  {name:<16} {ACCELERATE_CONFIG_DIR / (name + '.yaml')}")
    return 0


def cmd_validate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lagdpo validate", description="Check a PersonaKnob data file."
    )
    p.add_argument("path")
    args = p.parse_args(argv)
    from .data import load_personaknob
    from .dimensions import DIMENSIONS

    ds = load_personaknob(args.path)
    counts = {d: sum(m[k] for m in ds["dim_mask"]) for k, d in enumerate(DIMENSIONS)}
    print(
        f"{len(ds)} records; active per dimension: "
        + ", ".join(f"{d}={n}" for d, n in counts.items())
    )
    return 0


def cmd_help_config() -> int:
    from dataclasses import MISSING, fields

    from .config import LagDPOConfig

    own = {f.name for f in fields(LagDPOConfig)} - {f.name for f in fields(LagDPOConfig.__mro__[1])}
    for f in fields(LagDPOConfig):
        if f.name in own or f.name in (
            "beta",
            "learning_rate",
            "per_device_train_batch_size",
            "num_train_epochs",
            "gradient_accumulation_steps",
            "max_length",
            "precompute_ref_log_probs",
            "save_steps",
            "seed",
            "logging_steps",
            "bf16",
            "gradient_checkpointing",
            "warmup_steps",
            "lr_scheduler_type",
        ):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            default = getattr(default, "value", default)  # enums by their value
            shown = yaml.safe_dump(default, default_flow_style=True).removesuffix("...\n").strip()
            print(
                f"--{f.name.replace('_', '-'):<28} {f.metadata.get('help', '')} [default: {shown}]"
            )
    print("(every other DPOConfig / TrainingArguments field is accepted as well)")
    return 0


def _posttrain(name: str):
    """A post-training command (lagdpo.posttrain.commands), imported when it runs."""

    def run(argv: list[str]) -> int:
        from .posttrain import commands

        return getattr(commands, name)(argv)

    return run


COMMANDS = {
    "train": cmd_train,
    "ablate": cmd_ablate,
    "configs": cmd_configs,
    "validate": cmd_validate,
    "utility": _posttrain("cmd_utility"),
    "drift": _posttrain("cmd_drift"),
    "persona-vector": _posttrain("cmd_persona_vector"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if (not argv or argv[0] in ("-h", "--help")) else 2
    import warnings

    from ._pipes import pipe_safe_output

    try:
        with pipe_safe_output(), warnings.catch_warnings():  # `lagdpo train 2>&1 | head` saves
            # TRL 1.16 calls transformers 5's renamed gradient-checkpointing API: nothing to act on.
            warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.*is deprecated")
            return COMMANDS[argv[0]](argv[1:])
    except LagDPOError as exc:
        print(f"lagdpo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
