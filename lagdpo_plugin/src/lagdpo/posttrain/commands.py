"""Argument parsing of `lagdpo utility`, `lagdpo drift` and `lagdpo persona-vector` (registered in
:mod:`lagdpo.cli`). Each takes ``--config FILE`` (YAML or TOML, keys = option names with dashes or
underscores); options on the command line win over the file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import PosttrainError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    return [float(t) for t in _csv(text)]


def _ints(text: str) -> list[int]:
    return [int(t) for t in _csv(text)]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _load_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise PosttrainError(f"--config file {path!r} not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one line naming the file
        raise PosttrainError(f"could not parse --config {path!r}: {exc}") from None
    if not isinstance(data, dict):
        raise PosttrainError(f"--config {path!r} must hold a mapping of option: value")
    return data


def _config_tokens(parser, config: dict[str, Any], argv: list[str]) -> list[str]:
    """Turn a config mapping into command-line tokens; options also given in ``argv`` are skipped."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    given = {t.split("=", 1)[0] for t in argv if t.startswith("--")}
    tokens: list[str] = []
    for key, value in config.items():
        dest = key.replace("-", "_")
        action = actions.get(dest)
        if action is None or dest == "config":
            known = sorted(k.replace("_", "-") for k in actions if k not in ("help", "config"))
            raise PosttrainError(f"--config: unknown setting {key!r}; known: {', '.join(known)}")
        flag = action.option_strings[0]
        if flag in given or f"--no-{flag[2:]}" in given:
            continue
        if isinstance(action, argparse.BooleanOptionalAction) or action.nargs == 0:
            if value:
                tokens.append(flag)
            elif isinstance(action, argparse.BooleanOptionalAction):
                tokens.append(f"--no-{flag[2:]}")
            continue
        values = value if isinstance(value, list) else [value]
        if isinstance(action, argparse._AppendAction):
            for v in values:
                tokens += [flag, str(v)]
        else:
            tokens += [flag, ",".join(str(v) for v in values)]
    return tokens


def _parse(
    parser, argv: list[str], required: list[str], structured: tuple[str, ...] = ()
) -> argparse.Namespace:
    """Parse ``argv`` over the ``--config`` file; ``structured`` keys of the file (lists of
    mappings, e.g. ``judges``) are set on the result as they are."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    config = _load_config(known.config) if known.config else {}
    extra = {k: config.pop(k) for k in structured if k in config}
    args = parser.parse_args(_config_tokens(parser, config, argv) + argv)
    for key, value in extra.items():
        setattr(args, key, value)
    missing = [r for r in required if getattr(args, r.replace("-", "_")) in (None, [])]
    if missing:
        raise PosttrainError(
            f"{parser.prog}: missing {', '.join('--' + m for m in missing)} "
            "(on the command line or in --config)"
        )
    return args


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or TOML file of settings (option names as keys)")
    p.add_argument("--out", help="output folder")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--batch-size", type=_positive_int, default=8)


def _print(lines: list[str]) -> None:
    try:
        for line in lines:
            print(line)
        sys.stdout.flush()
    except BrokenPipeError:  # piped into head: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _harness_errors(fn):
    """Harness errors (IrtpeerError) become one-line lagdpo errors."""

    def wrapped(argv: list[str]) -> int:
        try:
            return fn(argv)
        except Exception as exc:
            try:
                from irtpeer._errors import IrtpeerError
            except ImportError:  # pragma: no cover
                raise exc from None
            if isinstance(exc, IrtpeerError):
                raise PosttrainError(str(exc)) from None
            raise

    return wrapped


@_harness_errors
def cmd_utility(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lagdpo utility",
        description="lm-evaluation-harness on each model with the same settings; accuracy per task "
        "and the paired difference from the base model (out/utility.csv).",
    )
    _common(p)
    p.add_argument("--model", action="append", help="checkpoint or LoRA adapter (LABEL=PATH ok)")
    p.add_argument("--tasks", type=_csv, help="comma-separated lm-eval tasks, e.g. mmlu,bbh")
    p.add_argument("--base", help="label of the base model (default: the first --model)")
    p.add_argument("--include-path", action="append", help="folder of local task YAMLs")
    p.add_argument("--limit", type=float, help="items per task (< 1: a fraction)")
    p.add_argument("--num-fewshot", type=int)
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--metric", help="per-item metric (default: exact_match, else acc)")
    args = _parse(p, argv, ["model", "tasks", "out"])
    from .utility import utility

    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    table = utility(
        args.model,
        args.tasks,
        args.out,
        base=args.base,
        include_path=args.include_path,
        limit=limit,
        num_fewshot=args.num_fewshot,
        apply_chat_template=args.chat_template,
        seed=args.seed,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        metric=args.metric,
    )
    lines = [f"lagdpo: utility table in {Path(args.out) / 'utility.csv'}"]
    for r in table.itertuples():
        lines.append(
            f"  {r.model:<24} {r.task:<20} acc {r.accuracy:.3f} ± {r.accuracy_se:.3f}  "
            f"diff {r.diff:+.3f} (p={r.p_value:.3g})"
        )
    _print(lines)
    return 0


@_harness_errors
def cmd_drift(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lagdpo drift",
        description="Cosine of each model's last-prompt-token hidden states to the base model's, "
        "per layer, with a bootstrap interval (out/drift.csv, out/drift.png).",
    )
    _common(p)
    p.add_argument("--base", help="base model (checkpoint or LoRA adapter; LABEL=PATH ok)")
    p.add_argument("--model", action="append", help="model to compare (repeat)")
    p.add_argument("--prompts", help="CSV/JSONL/parquet table with a `prompt` column")
    p.add_argument("--n-boot", type=_positive_int, default=2000)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    args = _parse(p, argv, ["base", "model", "prompts", "out"])
    from .drift import drift

    table = drift(
        args.base,
        args.model,
        args.prompts,
        args.out,
        batch_size=args.batch_size,
        n_boot=args.n_boot,
        level=args.level,
        seed=args.seed,
        chat_template=args.chat_template,
        device=args.device,
        plot=args.plot,
    )
    lines = [f"lagdpo: drift table in {Path(args.out) / 'drift.csv'}"]
    for model, g in table.groupby("model", sort=False):
        low = g.loc[g["cosine_mean"].idxmin()]
        lines.append(
            f"  {model:<24} lowest cosine {low.cosine_mean:.4f} at layer {int(low.layer)} "
            f"[{low.cosine_lo:.4f}, {low.cosine_hi:.4f}]"
        )
    _print(lines)
    return 0


def _judge_from_args(args, out: Path):
    from .persona import RuleJudge, harness_judge

    if bool(args.rule) == bool(args.judge or args.judges):
        raise PosttrainError("give either --rule REGEX or --judge MODEL (with --judge-base-url)")
    if args.rule:
        return RuleJudge(args.rule)
    from irtpeer.harness.endpoints import make_backends

    specs = list(args.judges or [])
    for model in args.judge or []:
        spec = {"model": model, "backend": args.judge_backend}
        if args.judge_backend == "openai":
            spec.update(base_url=args.judge_base_url, api_key_env=args.judge_api_key_env)
        specs.append(spec)
    dims = [d for chunk in args.dimension or [] for d in _csv(chunk)]
    if not dims:
        raise PosttrainError("--judge needs --dimension (the rubric dimension(s) to score, e.g. E)")
    return harness_judge(make_backends(specs, "judge"), dims, out, rubric=args.rubric)


@_harness_errors
def cmd_persona_vector(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lagdpo persona-vector",
        description="Persona vectors from contrast pairs and ±α steering on neutral prompts, scored "
        "by the harness's judges or a rule (out/steering.csv, out/vectors/, out/steering.png).",
    )
    _common(p)
    p.add_argument("--model", action="append", help="model to analyse (repeat; LABEL=PATH ok)")
    p.add_argument("--pairs", help="table with `positive` and `negative` (or `neutral`) prompts")
    p.add_argument("--eval-prompts", help="held-out neutral prompts: a table with `prompt`")
    p.add_argument("--vectors", help="steer with these vectors (safetensors) instead of --pairs")
    p.add_argument("--layers", type=_ints, help="decoder layers to steer, 1-based, e.g. 8,16")
    p.add_argument("--alphas", type=_floats, default=[0.0, 2.0, 4.0, 8.0])
    p.add_argument("--max-new-tokens", type=_positive_int, default=64)
    p.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--rule", help="score = number of matches of this regex in the reply")
    p.add_argument("--judge", action="append", help="judge model name at --judge-base-url")
    p.add_argument("--judge-backend", default="openai", choices=["openai", "vllm", "transformers"])
    p.add_argument("--judge-base-url")
    p.add_argument("--judge-api-key-env", default="OPENAI_API_KEY", help="NAME of the variable")
    p.add_argument("--rubric", default="persona")
    p.add_argument("--dimension", action="append", help="rubric dimension(s) scored, e.g. E")
    p.set_defaults(judges=None)  # in --config only: a list of irtpeer endpoint mappings
    args = _parse(p, argv, ["model", "eval_prompts", "layers", "out"], structured=("judges",))
    if not args.pairs and not args.vectors:
        raise PosttrainError("give --pairs FILE (contrast pairs) or --vectors FILE")
    from .persona import steering_experiment

    out = Path(args.out)
    table = steering_experiment(
        args.model,
        args.pairs,
        args.eval_prompts,
        _judge_from_args(args, out),
        out,
        layers=args.layers,
        alphas=args.alphas,
        vectors=args.vectors,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        chat_template=args.chat_template,
        device=args.device,
        plot=args.plot,
    )
    lines = [f"lagdpo: steering table in {out / 'steering.csv'}"]
    for r in table.itertuples():
        lines.append(
            f"  {r.model:<24} {r.direction:<8} layer {r.layer:<3} α={r.alpha:<6g} "
            f"success {r.success_rate:.2f}  shift {r.shift:+.3f}"
        )
    _print(lines)
    return 0
