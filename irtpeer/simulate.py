"""Synthetic ratings with known truth, for recovery checks and the bundled example data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._errors import IrtpeerError

__all__ = ["Simulation", "simulate"]


@dataclass
class Simulation:
    """Simulated ratings (DESIGN §2 long format) and the true parameters.

    ``truth`` has the columns of ``Calibration.measures`` that exist in truth (``dimension,
    facet, element, measure``), in the same identification: non-person facets and thresholds
    centred within each dimension, the person facet (``model``, and ``response`` when
    ``response_sd > 0``) floating.
    """

    ratings: pd.DataFrame
    truth: pd.DataFrame
    settings: dict

    def to_files(self, directory: str | os.PathLike) -> dict[str, Path]:
        from ._io import atomic_write_text

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"ratings": out / "ratings.parquet", "truth": out / "truth.csv"}
        tmp = out / ".ratings.parquet.tmp"
        self.ratings.to_parquet(tmp, index=False)
        os.replace(tmp, paths["ratings"])
        atomic_write_text(paths["truth"], self.truth.to_csv(index=False))
        return paths


def simulate(
    *,
    models: int = 5,
    questions: int = 200,
    judges: int = 3,
    dimensions: tuple[str, ...] | list[str] | str = ("A", "T", "E", "C"),
    items_per_dimension: int = 3,
    categories: int = 2,
    missing: float = 0.05,
    model_sd: float = 1.0,
    question_sd: float = 0.8,
    judge_sd: float = 0.5,
    item_sd: float = 0.7,
    response_sd: float = 0.0,
    seed: int = 0,
) -> Simulation:
    """Simulate a fully crossed models x questions x judges x items design per dimension.

    Scores follow the many-facet Rasch model: dichotomous when ``categories == 2`` (scores 0/1),
    else the Andrich rating scale with scores ``0..categories-1`` and evenly spaced thresholds.
    ``missing`` is the share of judgments whose score is set to null (missing at random).
    ``response_sd > 0`` adds a random effect per model x question (the response mode's truth).
    """
    dimensions = _check_settings(
        dimensions, models, questions, judges, items_per_dimension, categories, missing
    )
    rng = np.random.default_rng(seed)
    K = int(categories) - 1
    model_names, question_names, judge_names = _element_names(models, questions, judges)
    base_judge = rng.normal(0, judge_sd, judges)
    frames, truth = [], []
    for d in dimensions:
        theta = rng.normal(0, model_sd, models)
        beta = rng.normal(0, question_sd, questions)
        alpha = base_judge + rng.normal(0, judge_sd / 3, judges)
        items = np.array([f"{d}{i + 1}" for i in range(items_per_dimension)])
        delta = rng.normal(0, item_sd, items_per_dimension)
        tau = np.linspace(-1.5, 1.5, K) if K > 1 else np.zeros(0)
        shape = (models, questions)
        u = rng.normal(0, response_sd, shape) if response_sd > 0 else np.zeros(shape)
        m, q, j, r = _crossed(models, questions, judges, items_per_dimension)
        eta = theta[m] + u[m, q] - beta[q] - alpha[j] - delta[r]
        score = _draw_scores(eta, K, tau, rng)
        names = (model_names, question_names, judge_names, items)
        frames.append(_ratings_frame(d, names, (m, q, j, r), score, missing, rng))
        truth += _truth_frames(d, names, theta, u, beta, alpha, delta, tau, response_sd > 0)
    settings = {
        "models": models, "questions": questions, "judges": judges, "dimensions": list(dimensions),
        "items_per_dimension": items_per_dimension, "categories": categories, "missing": missing,
        "model_sd": model_sd, "question_sd": question_sd, "judge_sd": judge_sd, "item_sd": item_sd,
        "response_sd": response_sd, "seed": seed,
    }
    return Simulation(
        ratings=pd.concat(frames, ignore_index=True),
        truth=pd.concat(truth, ignore_index=True),
        settings=settings,
    )


def _check_settings(
    dimensions, models, questions, judges, items_per_dimension, categories, missing
):
    """Reject impossible settings; return the dimensions, an "A,T" string split into names."""
    if isinstance(dimensions, str):
        dimensions = [d.strip() for d in dimensions.split(",") if d.strip()]
    for name, v, lo in [
        ("models", models, 2), ("questions", questions, 2), ("judges", judges, 1),
        ("items_per_dimension", items_per_dimension, 1), ("categories", categories, 2),
    ]:
        if int(v) < lo:
            raise IrtpeerError(f"simulate: {name} must be at least {lo}, got {v}")
    if not 0 <= missing < 1:
        raise IrtpeerError(f"simulate: missing must be in [0, 1), got {missing}")
    if not dimensions:
        raise IrtpeerError("simulate: give at least one dimension")
    return dimensions


def _element_names(models: int, questions: int, judges: int) -> tuple[np.ndarray, ...]:
    """The labels of the models, questions and judges."""
    return (
        np.array([f"model-{i + 1}" for i in range(models)]),
        np.array([f"q{i + 1:04d}" for i in range(questions)]),
        np.array([f"judge-{i + 1}" for i in range(judges)]),
    )


def _crossed(models: int, questions: int, judges: int, items: int) -> tuple[np.ndarray, ...]:
    """The (model, question, judge, item) indices of every cell of the fully crossed design."""
    m, q, j, r = np.meshgrid(
        np.arange(models), np.arange(questions), np.arange(judges), np.arange(items),
        indexing="ij",
    )
    return m.ravel(), q.ravel(), j.ravel(), r.ravel()


def _draw_scores(eta: np.ndarray, K: int, tau: np.ndarray, rng) -> np.ndarray:
    """Scores 0..K drawn from the Rasch model (dichotomous, or the rating scale with ``tau``)."""
    if K == 1:
        return (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    kv = np.arange(K + 1)
    cum = np.concatenate([[0.0], np.cumsum(tau)])
    psi = eta[:, None] * kv - cum
    psi -= psi.max(1, keepdims=True)
    P = np.exp(psi)
    P /= P.sum(1, keepdims=True)
    return (rng.random(len(eta))[:, None] > np.cumsum(P, 1)).sum(1).astype(np.int64)


def _ratings_frame(d, names, cells, score, missing: float, rng) -> pd.DataFrame:
    """One dimension's ratings (long format), with a ``missing`` share of scores set to null."""
    model_names, question_names, judge_names, items = names
    m, q, j, r = cells
    frame = pd.DataFrame(
        {
            "model": model_names[m],
            "question": question_names[q],
            "judge": judge_names[j],
            "item": items[r],
            "dimension": d,
            "score": pd.array(score, dtype="Int64"),
        }
    )
    if missing > 0:
        drop = rng.random(len(frame)) < missing
        frame.loc[drop, "score"] = pd.NA
    return frame


def _truth_frames(d, names, theta, u, beta, alpha, delta, tau, response: bool) -> list:
    """One dimension's true measures, identified as the estimator identifies them."""
    model_names, question_names, judge_names, items = names

    def facet(name, element, measure):
        return pd.DataFrame(
            {"dimension": d, "facet": name, "element": element, "measure": measure}
        )

    # the same identification as the estimator: centre non-person facets, persons absorb it
    shift = beta.mean() + alpha.mean() + delta.mean()
    out = [facet("model", model_names, theta - shift)]
    if response:
        resp = (theta[:, None] + u - shift).ravel()
        labels = np.char.add(
            np.char.add(np.repeat(model_names, len(question_names)), "|"),
            np.tile(question_names, len(model_names)),
        )
        out.append(facet("response", labels, resp))
    out.append(facet("question", question_names, beta - beta.mean()))
    if len(judge_names) > 1:
        out.append(facet("judge", judge_names, alpha - alpha.mean()))
    if len(items) > 1:
        out.append(facet("item", items, delta - delta.mean()))
    if len(tau):
        out.append(facet("threshold", [str(k) for k in range(1, len(tau) + 1)], tau))
    return out
