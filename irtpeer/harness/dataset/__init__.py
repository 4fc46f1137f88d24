"""PersonaKnob-style data construction on the judge harness ("Dual Optimal", section 3,
appendices C, J, K): brainstorm → attribution → reference and one-dimension negatives → LLM
verifier → human review → the training file ``lagdpo train --data`` reads. See docs/dataset.md.

Modules: :mod:`.spec` (config, dimension definitions, stage prompts, anchoring examples),
:mod:`.stages` (requests and strict reply checks), :mod:`.build` (the per-instance state machine,
run in rounds through the harness's executor and store), :mod:`.review` (review export, accept,
split by seed scene), :mod:`.stats` (appendix-J statistics), :mod:`.html` (the review page).
"""

from .build import BuildResult, Instance, build_dataset, plan_instances
from .review import accept_review, split_by_scene
from .spec import BuildConfig, load_build_config, load_dimensions, load_prompts
from .stats import build_statistics, format_statistics, length_overlap

__all__ = [
    "BuildConfig",
    "BuildResult",
    "Instance",
    "accept_review",
    "build_dataset",
    "build_statistics",
    "format_statistics",
    "length_overlap",
    "load_build_config",
    "load_dimensions",
    "load_prompts",
    "plan_instances",
    "split_by_scene",
]
