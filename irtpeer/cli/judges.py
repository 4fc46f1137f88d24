"""``irtpeer judges``: how many judges are enough (paper appendix I)."""

from __future__ import annotations


def register(sub) -> None:
    from ._common import add_data_options, add_estimator_options, add_output_options

    p = sub.add_parser(
        "judges",
        help="refit with subsets of judges: ranking agreement, SE and shifts by number of judges",
        description=(
            "Refit every k-subset of judges (sampled when there are many) and compare with the "
            "full panel: Kendall tau-b / Spearman of model and question rankings, mean SE, "
            "largest shift; the leave-one-judge-out shift against the appendix-I bound; a "
            "D-study projection of reliability for more judges. Writes DIR/judge_count.csv, "
            "DIR/judge_loo.csv and DIR/d_study.csv."
        ),
    )
    add_data_options(p)
    p.add_argument("--judge", default="judge", help="the judge facet column (default: judge)")
    p.add_argument("--blocks", default="question", help="the question facet column (default: question)")
    p.add_argument("--max-subsets", type=int, default=20,
                   help="refit at most this many subsets per k, sampled (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed for sampling subsets (default 0)")
    add_estimator_options(p, own_seed=True)
    add_output_options(p, "judge_count.csv, judge_loo.csv and d_study.csv")
    p.set_defaults(func=lambda args: run(args, p))


def run(args, parser) -> int:
    from .._errors import IrtpeerError
    from ..analyses import judge_count
    from ._common import calibrate_from_args, progress_from_args, write_outputs

    if args.max_subsets < 1:
        raise IrtpeerError(f"--max-subsets {args.max_subsets}: give at least 1")
    def check(r):
        if args.judge not in r.facets:
            raise IrtpeerError(f"judge facet {args.judge!r} is not a facet of the ratings "
                               f"({', '.join(r.facets)}); name it with --judge")

    ratings, est, cal = calibrate_from_args(args, parser, check=check)
    res = judge_count(cal, ratings, est, judge=args.judge, question=args.blocks,
                      max_subsets=args.max_subsets, seed=args.seed,
                      progress=progress_from_args(args))
    write_outputs(args, {"judge_count": res.curve, "judge_loo": res.leave_one_out,
                         "d_study": res.d_study}, notes=res.notes)
    return 0
