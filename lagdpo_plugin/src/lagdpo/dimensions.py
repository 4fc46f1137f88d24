"""The four persona dimensions of PersonaKnob and how they group into Dignity and Peer."""

from __future__ import annotations

DIMENSIONS: tuple[str, ...] = ("A", "T", "E", "C")
"""Anti-sycophancy, Trustworthiness, Empathy, Creativity — in this fixed order everywhere (K = 4)."""

DIGNITY: tuple[str, ...] = ("A", "T")
PEER: tuple[str, ...] = ("E", "C")

DIMENSION_NAMES = {
    "A": "anti-sycophancy",
    "T": "trustworthiness",
    "E": "empathy",
    "C": "creativity",
}

REJECT_COLUMNS = {dim: f"reject_{dim}" for dim in DIMENSIONS}


def dimension_index(dim: str) -> int:
    return DIMENSIONS.index(dim)
