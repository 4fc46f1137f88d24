"""``irtpeer dataset build`` and ``irtpeer dataset accept``: PersonaKnob-style data construction.

A thin layer over :mod:`irtpeer.harness.dataset`; see docs/dataset.md.
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "dataset",
        help="build PersonaKnob-style preference data with generator and verifier LLMs",
        description="Build PersonaKnob-style training data (brainstorm, attribution, reference and "
        "one-dimension negatives, verifier, human review). See docs/dataset.md.",
    )
    dsub = p.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND")
    b = dsub.add_parser(
        "build",
        help="run or resume a build from a TOML/YAML config",
        description="Run (or resume: the same command again) a build. Writes DIR/instances.jsonl, "
        "DIR/review.csv, DIR/review.html, DIR/stats.csv, DIR/manifest.json; calls are stored in "
        "DIR/calls.jsonl and never paid twice.",
    )
    b.add_argument("config", help="build config (.toml, .yaml)")
    b.add_argument("--out", metavar="DIR", help="output folder (default: `out` in the config)")
    b.add_argument(
        "--limit", type=int, metavar="N", help="build only the first N instances (a dry run)"
    )
    prog = b.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    b.set_defaults(func=_build)
    a = dsub.add_parser(
        "accept",
        help="turn a reviewed review.csv into the training file personaknob.jsonl",
        description="Read the decisions (accept / reject / comment) of REVIEWED and write "
        "DIR/personaknob.jsonl (train) and DIR/personaknob_test.jsonl, split by seed scene.",
    )
    a.add_argument("dir", metavar="DIR", help="the build's output folder")
    a.add_argument("reviewed", metavar="REVIEWED", help="the reviewed CSV")
    a.add_argument(
        "--test-fraction",
        type=float,
        metavar="F",
        help="share of accepted instances in the test split (default: the build config's)",
    )
    a.add_argument("--seed", type=int, help="seed of the split (default: the build's)")
    a.set_defaults(func=_accept)
    p.set_defaults(func=lambda args: _help(p))


def _help(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def _build(args) -> int:
    from ..harness.dataset import build_dataset, format_statistics, load_build_config

    cfg = load_build_config(args.config)
    res = build_dataset(cfg, args.out, limit=args.limit, progress=args.progress)
    print(format_statistics(res.stats))
    c = res.manifest["instances"]
    print(
        f"\n{c.get('verified', 0)} verified, {c.get('dropped', 0)} dropped, "
        f"{c.get('failed', 0)} failed; review {res.out / 'review.csv'} "
        f"(or {res.out / 'review.html'}), then: irtpeer dataset accept {res.out} REVIEWED.csv"
    )
    if not res.complete:
        print(
            "some calls failed (see DIR/instances.jsonl, status failed); rerun the same command "
            "to retry only those",
            file=sys.stderr,
        )
        return 1
    return 0


def _accept(args) -> int:
    from ..harness.dataset import accept_review

    s = accept_review(args.dir, args.reviewed, test_fraction=args.test_fraction, seed=args.seed)
    print(
        f"{s['accepted']} accepted, {s['rejected']} rejected, {s['unreviewed']} unreviewed "
        f"(human pass rate {s['human_pass_rate']}); train {s['train']}, test {s['test']} "
        f"(split by seed scene)"
    )
    for k, v in s["files"].items():
        print(f"{k}: {v}")
    return 0
