"""``irtpeer answer``, ``irtpeer judge``, ``irtpeer run`` and ``irtpeer task``: the judge harness.

A thin layer over :mod:`irtpeer.harness`; see docs/harness.md.
"""

from __future__ import annotations

import argparse
import sys


def _endpoint_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("endpoint")
    g.add_argument(
        "--backend",
        choices=["openai", "vllm", "transformers"],
        default="openai",
        help="openai = any OpenAI-compatible server (default); vllm = offline engine; "
        "transformers = local generation",
    )
    g.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    g.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        metavar="NAME",
        help="environment variable that holds the API key (default OPENAI_API_KEY)",
    )
    g.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight per endpoint (default 8)"
    )
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default 120)")
    g.add_argument(
        "--max-retries", type=int, default=5, help="retries of transient errors (default 5)"
    )
    g.add_argument(
        "--backoff-base", type=float, default=0.5, help="first backoff in seconds (default 0.5)"
    )
    g.add_argument(
        "--no-structured",
        action="store_true",
        help="do not send response_format json_schema (for servers without structured output)",
    )
    g.add_argument(
        "--price-input",
        type=float,
        metavar="USD",
        help="price per 1M prompt tokens (cost estimate)",
    )
    g.add_argument(
        "--price-output", type=float, metavar="USD", help="price per 1M completion tokens"
    )
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=0.0)
    s.add_argument("--top-p", type=float, default=1.0)
    s.add_argument("--max-tokens", type=int, default=None)
    s.add_argument("--seed", type=int, default=None)
    r = p.add_argument_group("run")
    r.add_argument("--store", metavar="PATH", help="call store (default: OUT with .calls.jsonl)")
    r.add_argument(
        "--manifest", metavar="PATH", help="run manifest (default: OUT with .manifest.json)"
    )
    prog = r.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    prog.add_argument("--no-progress", dest="progress", action="store_false")


def _label_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="name of the model in the tables (one per --model, in order; default: the --model "
        "value, e.g. a checkpoint path)",
    )


def _specs(args, models: list[str], labels: list[str] | None = None) -> list[dict]:
    from ..harness.errors import ConfigError

    if labels and len(labels) != len(models):
        raise ConfigError(
            f"give one --label per --model, in the same order (got {len(models)} --model and "
            f"{len(labels)} --label)"
        )
    specs = []
    for i, m in enumerate(models):
        spec = {"backend": args.backend, "model": m}
        if labels:
            spec["label"] = labels[i]
        if args.backend == "openai":
            spec.update(
                base_url=args.base_url,
                api_key_env=args.api_key_env,
                concurrency=args.concurrency,
                timeout=args.timeout,
                max_retries=args.max_retries,
                backoff_base=args.backoff_base,
                structured=not args.no_structured,
                price_input_per_mtok=args.price_input,
                price_output_per_mtok=args.price_output,
            )
        else:
            spec.update(structured=not args.no_structured)
        specs.append(spec)
    return specs


def _sampling(args, default):
    from ..harness.backend import Sampling

    return Sampling.from_dict(
        {
            "temperature": args.temperature,
            "top_p": args.top_p,
            "max_tokens": args.max_tokens if args.max_tokens is not None else default.max_tokens,
            "seed": args.seed,
        }
    )


def _report(result, out, what: str) -> int:
    m = result.manifest
    c = m["counts"]
    cost = m.get("cost") or {}
    usd = ""
    if cost.get("estimated_usd") is not None:
        usd = f"; estimated ${cost['estimated_usd']:.4f}"
        if cost.get("unpriced"):
            usd += f" without {', '.join(cost['unpriced'])} (no price)"
    print(
        f"{what}: {m.get('calls', m.get('rows'))} calls planned, "
        f"{c.get('calls_cached', 0)} from the store, "
        f"{c.get('calls_done', 0)} sent and stored ({c.get('requests_sent', 0)} HTTP requests); "
        f"{c.get('reasks', 0)} re-asked, {c.get('judgments_invalid', 0)} invalid, "
        f"{c.get('judgments_failed', c.get('answers_failed', 0))} failed{usd} -> {out}",
        file=sys.stderr,
    )
    if not result.complete:
        print(
            "irtpeer: some calls failed (see the `reason` column and the manifest); "
            "rerun the same command to retry only those",
            file=sys.stderr,
        )
        return 1
    return 0


# ---- judge -------------------------------------------------------------------------------------
def register(sub) -> None:
    p = sub.add_parser(
        "answer",
        help="let evaluated models answer questions (answers table)",
        description="questions x models -> answers table (resumable; see docs/harness.md)",
    )
    p.add_argument(
        "questions", metavar="QUESTIONS", help="table with columns question, prompt [, dimensions]"
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="MODEL",
        help="evaluated model (repeat for several)",
    )
    _label_option(p)
    p.add_argument("--system", help="system message for every question")
    p.add_argument("--out", required=True, metavar="ANSWERS.parquet")
    _endpoint_options(p)
    p.set_defaults(func=run_answer)

    p = sub.add_parser(
        "judge",
        help="score answers with judge LLMs on rubric items (ratings table)",
        description="answers x judges x rubric dimensions -> ratings table "
        "(resumable; see docs/harness.md)",
    )
    p.add_argument(
        "answers",
        metavar="ANSWERS",
        help="table with columns model, question, prompt, answer [, dimensions]",
    )
    p.add_argument(
        "--judge",
        action="append",
        required=True,
        metavar="MODEL",
        help="judge model (repeat for several)",
    )
    p.add_argument(
        "--rubric", default="persona", help="built-in rubric name (persona, audit) or a rubric file"
    )
    p.add_argument("--out", required=True, metavar="RATINGS.parquet")
    p.add_argument(
        "--replicates", type=int, default=1, help="independent judgments per call (default 1)"
    )
    p.add_argument(
        "--no-reask", action="store_true", help="do not re-ask once after an invalid reply"
    )
    _endpoint_options(p)
    p.set_defaults(func=run_judge)

    p = sub.add_parser(
        "run",
        help="answer and judge from one TOML/YAML config file",
        description="Run the answer and judge stages described by CONFIG (see docs/harness.md).",
    )
    p.add_argument("config", metavar="CONFIG")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None)
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run_config_cmd)

    p = sub.add_parser(
        "task",
        help="OOD checks: sycophancy (SycophancyEval-style) and xstest (safe/unsafe)",
        description="Answer a task file with each model and score it by rule (see docs/harness.md).",
    )
    p.add_argument("task", choices=["sycophancy", "xstest"])
    p.add_argument("items", metavar="ITEMS", help="task file (format in docs/harness.md)")
    p.add_argument("--model", action="append", required=True, metavar="MODEL")
    _label_option(p)
    p.add_argument(
        "--out", required=True, metavar="DIR", help="folder for answers, scored rows and summary"
    )
    p.add_argument(
        "--judge",
        action="append",
        metavar="MODEL",
        help="classify replies with judge model(s) and the built-in `ood` rubric instead of the rule",
    )
    _endpoint_options(p)
    p.set_defaults(func=run_task)


def run_answer(args) -> int:
    from ..harness.answer import DEFAULT_ANSWER_SAMPLING, answer_questions
    from ..harness.endpoints import make_backends
    from ..harness.judge import default_paths
    from ..harness.tables import read_table

    models = make_backends(_specs(args, args.model, args.label), "model")
    questions = read_table(args.questions, "questions")
    store, manifest = default_paths(args.out)
    result = answer_questions(
        questions,
        models,
        store_path=args.store or store,
        out=args.out,
        manifest_path=args.manifest or manifest,
        sampling=_sampling(args, DEFAULT_ANSWER_SAMPLING),
        system_prompt=args.system,
        progress=args.progress,
    )
    return _report(result, args.out, "answer")


def run_judge(args) -> int:
    from ..harness.endpoints import make_backends
    from ..harness.judge import DEFAULT_JUDGE_SAMPLING, default_paths, judge_answers
    from ..harness.rubrics import load_rubric
    from ..harness.tables import read_table

    rubric = load_rubric(args.rubric)
    answers = read_table(args.answers, "answers")
    judges = make_backends(_specs(args, args.judge), "judge")
    store, manifest = default_paths(args.out)
    result = judge_answers(
        answers,
        judges,
        rubric,
        store_path=args.store or store,
        out=args.out,
        manifest_path=args.manifest or manifest,
        sampling=_sampling(args, DEFAULT_JUDGE_SAMPLING),
        replicates=args.replicates,
        reask=not args.no_reask,
        progress=args.progress,
        settings={"answers": str(args.answers)},
    )
    return _report(result, args.out, "judge")


def run_config_cmd(args) -> int:
    from ..harness.config import run_config

    results = run_config(args.config, progress=args.progress)
    code = 0
    for stage, (result, out) in results.items():
        code = max(code, _report(result, out, stage))
    return code


def run_task(args) -> int:
    from ..harness.answer import DEFAULT_ANSWER_SAMPLING
    from ..harness.endpoints import make_backends
    from ..harness.tasks import run_task as _run

    models = make_backends(_specs(args, args.model, args.label), "model")
    judges = make_backends(_specs(args, args.judge), "judge") if args.judge else None
    summary = _run(
        args.task,
        args.items,
        models,
        out_dir=args.out,
        judges=judges,
        sampling=_sampling(args, DEFAULT_ANSWER_SAMPLING),
        progress=args.progress,
    )
    print(summary.to_string(index=False))
    return 0
