"""``irtpeer compare``: Raw Prob, Z-score and MFRM side by side (the paper's Table 2), with
``--friedman`` the Friedman test across models with questions as blocks."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_data_options, add_estimator_options, add_output_options

    p = sub.add_parser(
        "compare",
        help="compare Raw Prob, Z-score and MFRM per model (Table 2); --friedman tests stability",
        description=(
            "Per dimension and for Peer/Dignity, each model's mean and SD over questions under Raw "
            "Prob, Z-score and MFRM (response measures with the other facets anchored), and "
            "Kendall tau-b / Spearman between the methods' rankings. With --friedman: the "
            "Friedman test across models with questions as blocks (chi-squared and F forms, "
            "Kendall's W) and post-hoc pairwise tests. Writes DIR/comparison.csv, "
            "DIR/rankings.csv and, with --friedman, DIR/friedman.csv and DIR/posthoc.csv."
        ),
    )
    add_data_options(p)
    p.add_argument("--friedman", action="store_true", help="run the Friedman test and post-hoc tests")
    p.add_argument("--posthoc", default="wilcoxon", choices=["wilcoxon", "nemenyi", "conover", "none"],
                   help="pairwise tests after Friedman (default: wilcoxon with Holm)")
    p.add_argument("--blocks", default="question", help="the column whose elements are the blocks (default: question)")
    add_estimator_options(p)
    add_output_options(p, "comparison.csv, rankings.csv (and friedman.csv, posthoc.csv)")
    p.set_defaults(func=lambda args: run(args, p))


def run(args, parser) -> int:
    from ..analyses import stability
    from ._common import calibrate_from_args, require_column, write_outputs

    ratings, _, cal = calibrate_from_args(
        args, parser, check=lambda r: require_column(r, args.blocks, "--blocks"))
    ph = None if (not args.friedman or args.posthoc == "none") else args.posthoc
    res = stability(cal, ratings, facet=args.blocks, posthoc_method=ph)
    tables = {"comparison": res.comparison, "rankings": res.rankings}
    if args.friedman:
        tables["friedman"] = res.friedman
        if ph:
            tables["posthoc"] = res.posthoc
    write_outputs(args, tables, notes=res.notes)
    return 0
