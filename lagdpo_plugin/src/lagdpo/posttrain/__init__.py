"""After training (paper §6.4 and appendix E): is general ability kept, how far did the
representations move, and can the persona be steered?

* :mod:`.utility` — lm-evaluation-harness on each checkpoint, accuracy per task with the paired
  difference from the base model (``lagdpo utility``; needs the ``utility`` extra).
* :mod:`.drift` — last-prompt-token hidden-state cosine to the base model per layer
  (``lagdpo drift``).
* :mod:`.persona` — persona vectors from contrast pairs and activation steering scored by a judge
  (``lagdpo persona-vector``).

Plots need the ``plot`` extra (matplotlib); tables and files go through irtpeer's writer.
"""

from __future__ import annotations

from ._common import ModelSpec, PosttrainError

__all__ = ["ModelSpec", "PosttrainError", "drift", "steering_experiment", "utility"]


def __getattr__(name):
    if name == "drift":
        from .drift import drift

        return drift
    if name == "utility":
        from .utility import utility

        return utility
    if name == "steering_experiment":
        from .persona import steering_experiment

        return steering_experiment
    raise AttributeError(f"module 'lagdpo.posttrain' has no attribute {name!r}")
