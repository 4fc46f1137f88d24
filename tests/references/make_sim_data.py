"""Generate the small simulated inputs used by the R reference fits.

Run from the repository root:  python tests/references/make_sim_data.py
Writes tests/data/binary_small.csv and tests/data/rsm_small.csv.
Each dataset starts at its base seed; if any element of any facet (or any person)
is extreme (all lowest / all highest category) or (RSM) a category is unobserved,
the seed is incremented and the draw repeated. The seed used is printed.
"""
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path("tests/data")


def extreme(df, cols, kmax):
    for c in cols:
        g = df.groupby(c)["score"]
        if ((g.min() == g.max()) & ((g.max() == kmax) | (g.min() == 0))).any():
            return True
        if (g.min() == g.max()).any():
            return True
    return False


def make_binary(seed):
    rng = np.random.default_rng(seed)
    n_m, n_q, n_j, n_i = 6, 40, 3, 3
    theta = rng.normal(0, 1, n_m)
    bq = rng.normal(0, 1, n_q)
    bj = np.array([-0.5, 0.0, 0.5])
    bi = np.array([-0.8, 0.0, 0.8])
    rows = []
    for m, q, j, i in itertools.product(range(n_m), range(n_q), range(n_j), range(n_i)):
        eta = theta[m] - bq[q] - bj[j] - bi[i]
        p = 1 / (1 + np.exp(-eta))
        rows.append((f"m{m + 1}", f"q{q + 1:02d}", f"j{j + 1}", f"i{i + 1}", int(rng.random() < p)))
    df = pd.DataFrame(rows, columns=["model", "question", "judge", "item", "score"])
    keep = rng.permutation(len(df))[: int(round(len(df) * 0.92))]
    df = df.iloc[np.sort(keep)].reset_index(drop=True)
    return df


def make_rsm(seed):
    rng = np.random.default_rng(seed)
    n_m, n_q, n_j = 5, 30, 4
    theta = rng.normal(0, 1, n_m)
    bq = rng.normal(0, 0.7, n_q)
    bj = np.array([-0.6, -0.2, 0.2, 0.6])
    tau = np.array([-1.5, -0.5, 0.5, 1.5])
    cum = np.concatenate([[0.0], -np.cumsum(tau)])  # -sum_{h<=k} tau_h
    ks = np.arange(5)
    rows = []
    for m, q, j in itertools.product(range(n_m), range(n_q), range(n_j)):
        eta = theta[m] - bq[q] - bj[j]
        logits = ks * eta + cum
        p = np.exp(logits - logits.max())
        p /= p.sum()
        x = rng.choice(5, p=p)
        rows.append((f"m{m + 1}", f"q{q + 1:02d}", f"j{j + 1}", int(x) + 1))
    return pd.DataFrame(rows, columns=["model", "question", "judge", "score"])


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    seed = 20261124
    while True:
        df = make_binary(seed)
        if not extreme(df, ["model", "question", "judge", "item"], 1):
            break
        print("binary: seed", seed, "gave an extreme element; trying next")
        seed += 1
    print("binary_small seed used:", seed, "rows:", len(df))
    df.to_csv(OUT / "binary_small.csv", index=False)

    seed = 20261124
    while True:
        df = make_rsm(seed)
        if df["score"].nunique() == 5 and not extreme(df, ["model", "question", "judge"], 5):
            break
        print("rsm: seed", seed, "rejected; trying next")
        seed += 1
    print("rsm_small seed used:", seed, "rows:", len(df))
    df.to_csv(OUT / "rsm_small.csv", index=False)


if __name__ == "__main__":
    main()
