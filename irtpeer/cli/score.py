"""``irtpeer score``: calibrate a ratings table and print / write the scores."""

from __future__ import annotations

import argparse
import sys

from .._errors import IrtpeerError


def _score_range(text: str):
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two integers), got {text!r}") from None
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"MIN must be below MAX, got {text!r}")
    return lo, hi


def _penalty(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="calibrate ratings with a many-facet Rasch model and report Peer/Dignity scores",
        description=(
            "Calibrate a long-format ratings table (parquet or CSV) with a many-facet Rasch model "
            "and print calibrated scores per model. Persons higher = better; every other facet "
            "higher = harder / more severe."
        ),
    )
    p.add_argument("path", nargs="?", help="ratings file (.parquet, .csv, .tsv)")
    p.add_argument("--example", action="store_true", help="use the bundled (simulated) example ratings")
    p.add_argument("--person", default="model", help="person facet column (default: model)")
    p.add_argument("--facets", default=None, help="other facet columns, comma-separated (default: question,judge,item where present)")
    p.add_argument("--dimension", default="dimension", help="dimension column (default: dimension if present; 'none' for one dimension)")
    p.add_argument("--score", default="score", help="integer score column (default: score)")
    p.add_argument("--scale", default="auto", help="auto | binary | rsm | pcm:FACET (default: auto)")
    p.add_argument("--person-mode", default="model", choices=["model", "response"], help="one measure per model (default) or per model x question")
    p.add_argument("--penalty", type=_penalty, default=None, help="L2 penalty (default: 0 in model mode, 1 in response mode)")
    p.add_argument("--estimator", default="torch", help="estimator (default: torch)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    p.add_argument("--duplicates", default="error", choices=["error", "keep", "mean"], help="duplicated judgments: stop (default), keep, or average")
    p.add_argument("--score-range", type=_score_range, default=None, metavar="MIN,MAX", help="valid score range; scores outside are an error")
    p.add_argument("--out", default=None, metavar="DIR", help="write measures.csv, scores.csv, convergence.csv, calibration.json here")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="print Newton iterations to stderr (default: when stderr is a terminal)")
    p.set_defaults(func=run)


def run(args) -> int:
    import irtpeer

    if args.example and args.path:
        raise IrtpeerError("give either a ratings PATH or --example, not both")
    if not args.example and not args.path:
        raise IrtpeerError("give a ratings PATH (parquet or CSV), or --example for the bundled data")
    path = irtpeer.example_path() if args.example else args.path
    dimension = None if str(args.dimension).lower() in ("none", "") else args.dimension
    ratings = irtpeer.load_ratings(
        path,
        person=args.person,
        facets=args.facets,
        dimension=dimension,
        score=args.score,
        duplicates=args.duplicates,
        score_range=args.score_range,
    )
    spec = irtpeer.ModelSpec(scale=args.scale, person_mode=args.person_mode)
    from ..estimators import get_estimator

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    est = get_estimator(args.estimator)(
        spec, penalty=args.penalty, device=args.device, progress=progress
    )
    cal = est.fit(ratings).calibration_
    if args.json:
        sys.stdout.write(cal.to_json() + "\n")
    else:
        print(cal.summary())
    if args.out:
        paths = cal.to_csv(args.out)
        stream = sys.stderr if args.json else sys.stdout
        print("\nWrote " + ", ".join(str(p) for p in paths.values()), file=stream)
    return 0
