"""``irtpeer score``: calibrate a ratings table, write the result files, print the scores.

Files are written before anything is printed, so a closed stdout (``irtpeer score ... | head``)
never loses them. Estimator settings come from one table (:data:`ESTIMATOR_FLAGS`): the CLI passes
an estimator exactly the options its class lists in ``OPTIONS``, refuses the others with one line,
and leaves the checking of values to the estimator.
"""

from __future__ import annotations

import argparse
import sys

from .._errors import IrtpeerError

#: option name -> (flag, argparse keywords). Which estimator takes which: its class's ``OPTIONS``.
ESTIMATOR_FLAGS: dict[str, tuple[str, dict]] = {
    "penalty": ("--penalty", {"type": float, "help": "L2 penalty (torch; default: 0 in model mode, 1 in response mode)"}),
    "device": ("--device", {"help": "auto | cpu | cuda (torch; default: auto)"}),
    "threads": ("--threads", {"type": int, "help": "CPU threads (torch; default: by the size of the work)"}),
    "se_facets": ("--se-facets", {"help": "facets that get full-information se when the design is too large for all (torch)"}),
    "person_prior": ("--person-prior", {"help": "normal | flat (bayes; default: normal)"}),
    "draws": ("--draws", {"type": int, "help": "posterior draws per chain (bayes)"}),
    "tune": ("--tune", {"type": int, "help": "tuning steps per chain (bayes)"}),
    "chains": ("--chains", {"type": int, "help": "chains (bayes)"}),
    "seed": ("--seed", {"type": int, "help": "random seed (bayes)"}),
    "method": ("--method", {"help": "nuts | advi | pathfinder (bayes; default: nuts)"}),
}


def _score_range(text: str):
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two integers), got {text!r}") from None
    if lo >= hi:
        raise argparse.ArgumentTypeError(f"MIN must be below MAX, got {text!r}")
    return lo, hi


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options that say how to read a ratings table and which model to fit."""
    p.add_argument("path", nargs="?", help="ratings file (.parquet, .csv, .tsv)")
    p.add_argument("--example", action="store_true", help="use the bundled (simulated) example ratings")
    p.add_argument("--person", default="model", help="person facet column (default: model)")
    p.add_argument("--facets", default=None, help="other facet columns, comma-separated (default: question,judge,item where present)")
    p.add_argument("--dimension", default="dimension", help="dimension column (default: dimension if present; 'none' for one dimension)")
    p.add_argument("--score", default="score", help="integer score column (default: score)")
    p.add_argument("--scale", default="auto", help="auto | binary | rsm | pcm:FACET (default: auto)")
    p.add_argument("--person-mode", default="model", choices=["model", "response", "hierarchical"],
                   help="one measure per model (default), per model x question, or hierarchical (bayes)")
    p.add_argument("--duplicates", default="error", choices=["error", "keep", "mean"], help="duplicated judgments: stop (default), keep, or average")
    p.add_argument("--score-range", type=_score_range, default=None, metavar="MIN,MAX", help="valid score range; scores outside are an error")


def add_estimator_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--estimator", default="torch", help="torch (exact ML, default) | bayes (PyMC)")
    for flag, kwargs in ESTIMATOR_FLAGS.values():
        p.add_argument(flag, default=None, **kwargs)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show progress on stderr (default: when stderr is a terminal)")


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
    add_data_options(p)
    add_estimator_options(p)
    p.add_argument("--out", default=None, metavar="DIR", help="write measures.csv, scores.csv, convergence.csv, calibration.json here")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.set_defaults(func=run)


def load_from_args(args):
    """The :class:`~irtpeer.Ratings` and :class:`~irtpeer.ModelSpec` the data options describe."""
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
    return ratings, irtpeer.ModelSpec(scale=args.scale, person_mode=args.person_mode)


def estimator_from_args(args, spec):
    """The estimator named by ``--estimator`` with the options that belong to it."""
    from ..estimators import get_estimator

    cls = get_estimator(args.estimator)
    given = {k: getattr(args, k) for k in ESTIMATOR_FLAGS if getattr(args, k, None) is not None}
    foreign = [k for k in given if k not in cls.OPTIONS]
    if foreign:
        flags = ", ".join(ESTIMATOR_FLAGS[k][0] for k in foreign)
        takes = ", ".join(ESTIMATOR_FLAGS[k][0] for k in cls.OPTIONS if k in ESTIMATOR_FLAGS)
        raise IrtpeerError(
            f"{flags} do{'es' if len(foreign) == 1 else ''} not apply to --estimator "
            f"{args.estimator} (it takes {takes or 'no options'}); drop {flags} or choose "
            f"another estimator"
        )
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    return cls(spec, progress=progress, **given)


def run(args) -> int:
    ratings, spec = load_from_args(args)
    cal = estimator_from_args(args, spec).fit(ratings).calibration_
    paths = cal.to_csv(args.out) if args.out else {}  # files first: a closed stdout loses nothing
    if args.json:
        sys.stdout.write(cal.to_json() + "\n")
    else:
        print(cal.summary())
    if paths:
        stream = sys.stderr if args.json else sys.stdout
        print("\nWrote " + ", ".join(str(p) for p in paths.values()), file=stream)
    return 0
