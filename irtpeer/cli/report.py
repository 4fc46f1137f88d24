"""``irtpeer report``: calibrate a ratings table and write the self-contained HTML report."""

from __future__ import annotations

import argparse


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def register(sub) -> None:
    from ._common import add_data_options, add_estimator_options

    p = sub.add_parser(
        "report",
        help="calibrate ratings and write a self-contained HTML report of facet diagnostics",
        description=(
            "Calibrate a long-format ratings table (parquet or CSV), run the analyses and write "
            "one HTML file: scores with their uncertainty, Wright map, FACETS-style measurement "
            "tables with fit, facet plots, rating-scale diagnostics, convergence and run "
            "metadata. The file has no script and makes no network request."
        ),
    )
    add_data_options(p)
    add_estimator_options(p)
    p.add_argument("--out", default="report.html", metavar="FILE",
                   help="the HTML file to write (default: report.html)")
    p.add_argument("--title", default=None, help="report title (default: from the input file name)")
    p.add_argument("--no-analyses", dest="analyses", action="store_false",
                   help="leave out fit statistics and the analyses (faster)")
    p.add_argument("--rows", dest="head", type=_positive, default=10, metavar="N",
                   help="rows shown at each end of a long table (default: 10)")
    p.add_argument("--max-rows", type=_positive, default=1000, metavar="N",
                   help="longest table embedded in full, on demand (default: 1000)")
    p.add_argument("--max-refits", type=int, default=12, metavar="N",
                   help="most refits for the judge-count curve (default: 12; 0: D-study only)")
    p.set_defaults(func=lambda args: run(args, p))


def run(args, parser) -> int:
    from pathlib import Path

    from .._errors import IrtpeerError
    from ..report import write_report
    from ._common import calibrate_from_args

    out = Path(args.out)
    if out.is_dir():
        raise IrtpeerError(f"--out {str(out)!r} is a folder; give the path of an .html file")
    ratings, est, cal = calibrate_from_args(args, parser)
    path = write_report(cal, ratings, out, analyses=args.analyses, title=args.title,
                        head=args.head, max_rows=args.max_rows, estimator=est,
                        max_refits=args.max_refits)
    print(f"Wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
