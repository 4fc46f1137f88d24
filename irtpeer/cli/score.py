"""``irtpeer score``: calibrate a ratings table, write the result files, print the scores.

Files are written before anything is printed, so a closed stdout (``irtpeer score ... | head``)
never loses them. The data and estimator options are the ones every calibrating command shares
(:mod:`irtpeer.cli._common`): an estimator gets exactly the options its class lists in
``OPTIONS`` and checks their values itself.
"""

from __future__ import annotations

import sys

import pandas as pd

from ._common import (
    add_data_options,
    add_estimator_options,
    apply_config,
    estimator_from_args,
    load_from_args,
    progress_from_args,
)

SE_KINDS = ("conditional", "questions")

#: ``--fit auto`` computes fit statistics up to this many judgments. They are computed slice by
#: slice (a few MB whatever the size), but they take two more passes over the judgments, about
#: as long as the fit itself at 15 M judgments (~3.5 s CPU), so large inputs ask for them.
FIT_AUTO_LIMIT = 5_000_000


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
    p.add_argument("--se", default="conditional", choices=SE_KINDS,
                   help="conditional: SEs for these questions (default); questions: also "
                        "question-clustered SEs (<dim>_se_q) for prompts like these")
    p.add_argument("--se-method", default="sandwich", choices=["sandwich", "bootstrap"],
                   help="how --se questions is computed (default: sandwich; bootstrap refits)")
    p.add_argument("--n-boot", type=int, default=200, metavar="N",
                   help="bootstrap replicates for --se-method bootstrap (default: 200)")
    p.add_argument("--fit", default="auto", choices=["auto", "on", "off"],
                   help="infit/outfit columns in measures.csv: on, off, or auto (default: on up "
                        f"to {FIT_AUTO_LIMIT:,} judgments)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write measures.csv, scores.csv, convergence.csv, calibration.json here "
                        "(and diagnostics.csv, rank_probabilities.csv, idata.nc for bayes)")
    p.add_argument("--report", default=None, metavar="FILE",
                   help="also write the self-contained HTML report of facet diagnostics here")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    apply_config(args, args._parser)
    ratings, spec = load_from_args(args, preload=True)
    est = estimator_from_args(args, spec)
    cal = est.fit(ratings).calibration_
    if args.fit == "on" or (args.fit == "auto" and len(ratings) <= FIT_AUTO_LIMIT):
        _add_fit_statistics(cal, ratings)
    elif args.fit == "auto":
        cal.notes.append(
            f"fit statistics were not computed for {len(ratings):,} judgments (more than "
            f"{FIT_AUTO_LIMIT:,}; they take about as long as the fit again): --fit on "
            f"computes them"
        )
    if args.se == "questions":
        _add_question_ses(cal, ratings, est, args)
    paths = _write(cal, ratings, est, args)  # files first: a closed stdout loses nothing
    if args.json:
        sys.stdout.write(cal.to_json() + "\n")
    else:
        print(cal.summary())
    for line in _bayes_warnings(cal):
        print(f"irtpeer: warning: {line}", file=sys.stderr)
    if paths:
        stream = sys.stderr if args.json else sys.stdout
        print("\nWrote " + ", ".join(str(p) for p in paths), file=stream)
    return 0


def _add_fit_statistics(cal, ratings) -> None:
    """Infit/outfit mean-squares with ZStd and point-measure correlation beside each measure."""
    from ..analyses import fit_statistics

    fit = fit_statistics(cal, ratings)
    extra = fit.drop(columns=["dimension", "facet", "element"])
    cal.measures = pd.concat([cal.measures.reset_index(drop=True), extra], axis=1)


def _add_question_ses(cal, ratings, est, args) -> None:
    """``<dim>_se_q``: SEs clustered by question (prompts like these, not only these)."""
    from ..analyses import question_uncertainty

    q = question_uncertainty(cal, ratings, method=args.se_method, estimator=est,
                             n_boot=args.n_boot, progress=progress_from_args(args))
    cal.scores = cal.scores.merge(q.se, on=cal.person, how="left")
    cal.notes.extend(n for n in q.notes if n not in cal.notes)
    cal.notes.append(
        f"'_se_q' columns: standard errors clustered by question ({args.se_method}); they "
        f"describe prompts like these, '_se' only these prompts"
    )


def _write(cal, ratings, est, args) -> list:
    paths = []
    if args.out:
        paths += list(cal.to_csv(args.out).values())
        if cal.idata is not None:
            from ..estimators._bayes_diagnostics import write_bayes_outputs

            paths += list(write_bayes_outputs(cal, args.out).values())
    if args.report:
        from ..report import write_report

        paths.append(write_report(cal, ratings, args.report, estimator=est))
    return paths


def _bayes_warnings(cal) -> list[str]:
    if cal.idata is None:
        return []
    from ..estimators._bayes_diagnostics import warnings

    return warnings(cal)
