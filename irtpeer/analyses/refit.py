"""Building new :class:`~irtpeer.Ratings` from a subset or a resample of the observations, and
refitting them with any estimator (the analyses that refit take an estimator instance)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..ratings import load_ratings

__all__ = ["ratings_from_frame", "resample_clusters"]


def ratings_from_frame(ratings, frame: pd.DataFrame):
    """New Ratings from rows of ``ratings.data`` (a subset or a resample), same column mapping."""
    cols = [c for c in frame.columns if c != "_weight"]  # the scores are in _score only
    return load_ratings(
        frame[cols].rename(columns={"_score": ratings.score}).reset_index(drop=True),
        person=ratings.person, facets=list(ratings.facets),
        dimension=ratings.dimension, score=ratings.score,
        duplicates=ratings.summary.get("duplicates", "error"),
    )


def resample_clusters(ratings, cluster: str, rng: np.random.Generator):
    """A bootstrap resample of the elements of ``cluster`` (drawn with replacement; a cluster
    drawn twice comes in twice under new labels ``<label>#<copy>``)."""
    data = ratings.data
    labels = data[cluster].astype(str)
    uniq = np.unique(labels.to_numpy())
    draw = rng.choice(uniq, size=len(uniq), replace=True)
    groups = {k: v for k, v in data.groupby(labels.to_numpy(), sort=False).indices.items()}
    parts, seen = [], {}
    for q in draw:
        copy = seen.get(q, 0)
        seen[q] = copy + 1
        part = data.iloc[groups[q]].copy()
        part[cluster] = f"{q}#{copy}"
        parts.append(part)
    return ratings_from_frame(ratings, pd.concat(parts, ignore_index=True))
