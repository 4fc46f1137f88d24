"""The model specification: scale, person mode, partial-credit facet (DESIGN §3)."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import RatingsError

__all__ = ["ModelSpec"]

_SCALES = ("auto", "binary", "rsm", "pcm")
_PERSON_MODES = ("model", "response", "hierarchical")


@dataclass(frozen=True)
class ModelSpec:
    """What is fitted to each dimension.

    Parameters
    ----------
    scale
        ``"auto"`` (dichotomous when a dimension has two categories, else Andrich rating scale),
        ``"binary"``, ``"rsm"`` (Andrich rating scale, thresholds shared by all elements) or
        ``"pcm"`` (partial credit: thresholds per element of ``pcm_facet``). The string form
        ``"pcm:FACET"`` is accepted too.
    person_mode
        ``"model"``: one measure per model (identified without a penalty). ``"response"``: one
        measure per model x question (the paper's Eq. 7); it is separated from the question
        difficulty only by the ridge penalty, and a model's score is the mean of its responses.
        ``"hierarchical"``: theta_mq = theta_m + u_mq with random response effects u_mq ~ N(0,
        sigma_u) (the Bayesian estimator); the model-level theta_m then carries uncertainty about
        new questions.
    pcm_facet
        The facet whose elements get their own thresholds under ``scale="pcm"``.
    response_facet
        The facet that, with the person, defines a response in ``person_mode="response"``.
    """

    scale: str = "auto"
    person_mode: str = "model"
    pcm_facet: str | None = None
    response_facet: str = "question"

    def __post_init__(self):
        scale = self.scale
        if isinstance(scale, str) and scale.startswith("pcm:"):
            object.__setattr__(self, "scale", "pcm")
            object.__setattr__(self, "pcm_facet", scale.split(":", 1)[1] or None)
        if self.scale not in _SCALES:
            raise RatingsError(
                f"scale={self.scale!r} is not one of auto, binary, rsm, pcm:FACET"
            )
        if self.scale == "pcm" and not self.pcm_facet:
            raise RatingsError("scale 'pcm' needs a facet: write pcm:FACET, e.g. --scale pcm:item")
        if self.person_mode not in _PERSON_MODES:
            raise RatingsError(
                f"person mode {self.person_mode!r} is not one of {', '.join(_PERSON_MODES)}"
            )
