"""The SFT baselines on TRL's `SFTTrainer`.

* ``sft-anchor``: supervised fine-tuning on the anchor data only (the "A" column of the paper's
  Table 3: general instruction data, no PersonaKnob preferences). It requires anchor data: given
  PersonaKnob data alone it stops with an error rather than train what sft-combined trains.
* ``sft-combined``: the anchor data plus the PersonaKnob golden answers (prompt → golden).
"""

from __future__ import annotations

import warnings
from typing import Any

import datasets
from trl import SFTConfig, SFTTrainer

from .data import load_sft_data, personaknob_to_sft
from .errors import ConfigError, DataError

__all__ = ["PersonaSFTTrainer", "build_sft_dataset", "sft_config_from_settings"]


def _to_prompt_completion(dataset, conversational: bool):
    """Bring prompt/completion or messages data to one prompt/completion layout."""
    rows = {"prompt": [], "completion": []}
    if "messages" in dataset.column_names:
        if not conversational:
            raise DataError(
                "chat-form SFT data (`messages`) needs a tokenizer with a chat template."
            )
        for i, row in enumerate(dataset):
            messages = row["messages"]
            if messages[-1]["role"] != "assistant":
                raise DataError(f"SFT record {i}: the last message must be the assistant's answer.")
            rows["prompt"].append(messages[:-1])
            rows["completion"].append([messages[-1]])
        return datasets.Dataset.from_dict(rows)
    for row in dataset:
        prompt, completion = row["prompt"], row["completion"]
        if conversational:
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
            completion = (
                [{"role": "assistant", "content": completion}]
                if isinstance(completion, str)
                else completion
            )
        rows["prompt"].append(prompt)
        rows["completion"].append(completion)
    return datasets.Dataset.from_dict(rows)


def build_sft_dataset(method: str, persona=None, anchor=None, conversational: bool = False):
    """The training set of an SFT baseline (see module docstring)."""
    parts = []
    if method == "sft-anchor":
        # Anchor data only: PersonaKnob records alone would make it sft-combined without anchors.
        if anchor is None:
            raise DataError(
                "sft-anchor trains on anchor SFT data only and got none: give `anchor_data` "
                "(--anchor-data PATH, or SFT data as --data); for the PersonaKnob golden answers "
                "use sft-combined."
            )
        parts.append(load_sft_data(anchor))
    elif method == "sft-combined":
        if persona is None:
            raise DataError("sft-combined needs PersonaKnob data (--data).")
        if anchor is not None:
            parts.append(load_sft_data(anchor))
        persona_ds = (
            persona
            if "golden" not in getattr(persona, "column_names", [])
            else personaknob_to_sft(persona)
        )
        parts.append(load_sft_data(persona_ds))
    else:
        raise DataError(f"{method!r} is not an SFT method.")
    return datasets.concatenate_datasets([_to_prompt_completion(p, conversational) for p in parts])


def sft_config_from_settings(settings: dict[str, Any]) -> SFTConfig:
    """An `SFTConfig` from the settings that SFTConfig knows (the DPO-only ones are dropped)."""
    from dataclasses import fields

    known = {f.name for f in fields(SFTConfig) if f.init}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated")
            return SFTConfig(**{k: v for k, v in settings.items() if k in known})
    except (ValueError, TypeError) as exc:  # SFTConfig / TrainingArguments checks
        raise ConfigError(f"invalid SFT settings: {' '.join(str(exc).split())}") from exc


class PersonaSFTTrainer(SFTTrainer):
    """`SFTTrainer` that builds the SFT-Anchor / SFT-Combined training mix itself.

    Args:
        method: ``"sft-anchor"`` or ``"sft-combined"``.
        persona_dataset: PersonaKnob records (validated Dataset, path or list of dicts).
        anchor_dataset: SFT data in prompt/completion or chat form.
    """

    def __init__(
        self,
        model,
        args: SFTConfig,
        *,
        method: str,
        processing_class,
        persona_dataset=None,
        anchor_dataset=None,
        **kwargs,
    ):
        conversational = bool(getattr(processing_class, "chat_template", None))
        train_dataset = build_sft_dataset(method, persona_dataset, anchor_dataset, conversational)
        self.method = method
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=processing_class,
            **kwargs,
        )
