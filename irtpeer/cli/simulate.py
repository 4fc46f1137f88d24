"""``irtpeer simulate``: synthetic ratings with known truth."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate ratings with known truth (for recovery checks and examples)",
        description="Simulate a models x questions x judges x items design per dimension from the "
        "many-facet Rasch model; writes OUT/ratings.parquet and OUT/truth.csv.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for ratings.parquet and truth.csv")
    p.add_argument("--models", type=int, default=5)
    p.add_argument("--questions", type=int, default=200)
    p.add_argument("--judges", type=int, default=3)
    p.add_argument("--dimensions", default="A,T,E,C", help="comma-separated dimension names (default A,T,E,C)")
    p.add_argument("--items-per-dimension", type=int, default=3)
    p.add_argument("--categories", type=int, default=2, help="2 = binary (default); more = Andrich rating scale 0..N-1")
    p.add_argument("--missing", type=float, default=0.05, help="share of judgments without a score (default 0.05)")
    p.add_argument("--response-sd", type=float, default=0.0, help="SD of model x question effects (default 0)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..simulate import simulate

    sim = simulate(
        models=args.models,
        questions=args.questions,
        judges=args.judges,
        dimensions=args.dimensions,
        items_per_dimension=args.items_per_dimension,
        categories=args.categories,
        missing=args.missing,
        response_sd=args.response_sd,
        seed=args.seed,
    )
    paths = sim.to_files(args.out)
    n = len(sim.ratings)
    nnull = int(sim.ratings["score"].isna().sum())
    print(f"Simulated {n} judgments ({nnull} missing) -> {paths['ratings']}; truth -> {paths['truth']}")
    return 0
