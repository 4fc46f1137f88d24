"""``irtpeer bias``: bias/interaction analysis (FACETS Tables 13-14) of two facets."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_data_options, add_estimator_options, add_output_options

    p = sub.add_parser(
        "bias",
        help="bias/interaction of two facets (e.g. judge x model) with the main effects anchored",
        description=(
            "Calibrate the ratings, then estimate one bias per cell of two facets (FACETS Tables "
            "13-14) with every main effect anchored. bias > 0: the first facet scores that cell "
            "lower than the measures predict (harsher). Writes DIR/bias.csv and "
            "DIR/bias_contrasts.csv."
        ),
    )
    add_data_options(p, facets_flag="--model-facets")
    p.add_argument("--facets", dest="pair", default="judge,model", metavar="A,B",
                   help="the two facets (ratings columns) to cross (default: judge,model)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="flag cells whose Holm-adjusted p-value is below this (default 0.05)")
    add_estimator_options(p)
    add_output_options(p, "bias.csv and bias_contrasts.csv")
    p.set_defaults(func=lambda args: run(args, p))


def run(args, parser) -> int:
    from ..analyses import bias_contrasts, bias_interaction
    from ..analyses.bias import check_bias_facets
    from ._common import calibrate_from_args, write_outputs

    ratings, _, cal = calibrate_from_args(args, parser,
                                          check=lambda r: check_bias_facets(r, args.pair))
    table = bias_interaction(cal, ratings, args.pair, alpha=args.alpha)
    flagged = int(table["flag"].sum())
    notes = [f"{flagged} of {len(table)} cells have a Holm-adjusted p below {args.alpha:g}"]
    write_outputs(args, {"bias": table, "bias_contrasts": bias_contrasts(table)}, notes=notes)
    return 0
