"""``irtpeer equate``: common-person equating across dimensions (paper appendix B.4)."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_data_options, add_estimator_options, add_output_options

    p = sub.add_parser(
        "equate",
        help="check that the dimensions share a unit before Peer/Dignity average them",
        description=(
            "The model x question responses are common persons of every dimension. Per pair of "
            "dimensions: linking shift, mean/sigma slope with a bootstrap CI, disattenuated "
            "correlation, share of responses inside the 95%% bands, and a verdict (comparable | "
            "needs linking); Peer/Dignity linked where needed. Writes DIR/equating.csv and "
            "DIR/linked_scores.csv."
        ),
    )
    add_data_options(p)
    p.add_argument("--blocks", default="question", help="with the person, defines a response (default: question)")
    p.add_argument("--boot", type=int, default=1000, help="bootstrap replicates for the slope CI (default 1000)")
    p.add_argument("--tolerance", type=float, default=0.1,
                   help="slopes within 1 +/- this are comparable even if their CI excludes 1 (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the bootstrap (default 0)")
    add_estimator_options(p, own_seed=True)
    add_output_options(p, "equating.csv and linked_scores.csv")
    p.set_defaults(func=lambda args: run(args, p))


def run(args, parser) -> int:
    from .._errors import IrtpeerError
    from ..analyses import equate_dimensions
    from ._common import calibrate_from_args, require_column, write_outputs

    if args.boot < 100:
        raise IrtpeerError(f"--boot {args.boot}: use at least 100 bootstrap replicates")
    if not args.tolerance >= 0:
        raise IrtpeerError(f"--tolerance {args.tolerance}: give a number >= 0, e.g. 0.1")
    def check(r):
        require_column(r, args.blocks, "--blocks")
        if len(r.dimensions) < 2:
            raise IrtpeerError(
                f"equating needs at least two dimensions; the ratings have {len(r.dimensions)} "
                f"({', '.join(r.dimensions)}): name the dimension column with --dimension"
            )

    ratings, _, cal = calibrate_from_args(args, parser, check=check)
    res = equate_dimensions(cal, ratings, facet=args.blocks, n_boot=args.boot, seed=args.seed,
                            tolerance=args.tolerance)
    write_outputs(args, {"equating": res.table, "linked_scores": res.linked}, notes=res.notes)
    return 0
