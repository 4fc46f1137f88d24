"""PersonaKnob data: loading, validation, tokenisation and batching.

A PersonaKnob record has a ``mask`` (the active persona dimensions), a ``prompt``, the ``golden``
(chosen) answer and one rejection per dimension, ``reject_A`` … ``reject_C``, each failing exactly
its own dimension and empty for inactive dimensions. Extra columns (``seed_scene``, ``context``,
``trigger``, …) are kept.

A record becomes one chosen completion and up to four rejected completions with a per-dimension
validity mask. The collator lays a batch out as ``[chosen_0 … chosen_{B-1}; rejections…]`` so that
one forward pass scores the chosen completion once per prompt plus every active rejection.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .dimensions import DIMENSIONS, REJECT_COLUMNS
from .errors import DataError

__all__ = [
    "MultiNegCollator",
    "flatten_to_pairs",
    "is_personaknob",
    "load_personaknob",
    "load_sft_data",
    "parse_mask",
    "personaknob_to_sft",
    "tokenize_personaknob",
    "validate_record",
]

K = len(DIMENSIONS)


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _read_table(source: Any):
    """Read CSV / JSON / JSONL / a saved ``datasets`` dataset / a list of dicts into a Dataset."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return source
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return datasets.Dataset.from_list([dict(r) for r in source])
    path = Path(os.fspath(source))
    if not path.exists():
        raise DataError(
            f"data path {str(path)!r} does not exist; pass a CSV, JSON, JSONL file or a saved dataset."
        )
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except Exception as exc:
            raise DataError(
                f"data directory {str(path)!r} is not a dataset saved with `Dataset.save_to_disk`: {exc}"
            ) from exc
        if isinstance(loaded, datasets.DatasetDict):
            if "train" not in loaded:
                raise DataError(
                    f"data directory {str(path)!r} holds splits {list(loaded)}; it needs a 'train' split."
                )
            loaded = loaded["train"]
        return loaded
    suffix = path.suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        # keep_default_na=False: an empty rejection is an empty string, not NaN.
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        return datasets.Dataset.from_pandas(frame, preserve_index=False)
    if suffix == ".jsonl":
        rows = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        return datasets.Dataset.from_list(rows)
    if suffix == ".json":
        payload = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(payload, Mapping):
            for key in ("train", "data", "records"):
                if isinstance(payload.get(key), list):
                    payload = payload[key]
                    break
        if not isinstance(payload, list):
            raise DataError(
                f"JSON file {str(path)!r} must hold a list of records (or {{'train': [...]}}), "
                f"got {type(payload).__name__}."
            )
        return datasets.Dataset.from_list(payload)
    raise DataError(
        f"data file {str(path)!r} has unsupported suffix {suffix!r}; use .csv, .json, .jsonl or a saved dataset directory."
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def parse_mask(value: Any, *, where: str = "mask") -> list[str]:
    """Active dimensions from a list (``["E", "A"]``) or a string (``'["E","A"]'``, ``"E,A"``, ``"E A"``, ``"EA"``).

    Returned in the canonical order A, T, E, C, without duplicates.
    """
    if value is None:
        raise DataError(
            f"{where}: the mask is missing; give the active dimensions, e.g. ['E', 'A']."
        )
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text.replace("'", '"'))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{where}: cannot parse mask {value!r} as a JSON list: {exc}"
                ) from exc
        else:
            for sep in (",", ";", "+", "|", "/"):
                text = text.replace(sep, " ")
            items = text.split()
            if (
                len(items) == 1
                and len(items[0]) > 1
                and all(ch in DIMENSIONS for ch in items[0].upper())
            ):
                items = list(items[0])
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        raise DataError(
            f"{where}: mask must be a list or a string of dimensions, got {type(value).__name__}."
        )
    dims = []
    for item in items:
        dim = str(item).strip().strip("'\"").upper()
        if dim not in DIMENSIONS:
            raise DataError(
                f"{where}: unknown dimension {item!r} in mask {value!r}; dimensions are {list(DIMENSIONS)}."
            )
        dims.append(dim)
    if not dims:
        raise DataError(f"{where}: mask {value!r} has no active dimension; at least one is needed.")
    return [d for d in DIMENSIONS if d in dims]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):  # NaN from pandas
        return ""
    return str(value)


def validate_record(record: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
    """Check one PersonaKnob record and return it normalised (``mask`` as a list, ``dim_mask`` added).

    Raises :class:`DataError` naming the record and the column for an unknown dimension, an
    empty prompt or golden answer, or a missing/empty rejection for an active dimension.
    """
    where = f"record {index}"
    for column in ("mask", "prompt", "golden"):
        if column not in record:
            raise DataError(
                f"{where}: column {column!r} is missing; PersonaKnob records need mask, prompt, golden, reject_A..reject_C."
            )
    mask = parse_mask(record["mask"], where=f"{where}, column 'mask'")
    out = dict(record)
    out["mask"] = mask
    out["prompt"] = _text(record["prompt"])
    out["golden"] = _text(record["golden"])
    if not out["prompt"].strip():
        raise DataError(f"{where}: column 'prompt' is empty; every record needs a prompt.")
    if not out["golden"].strip():
        raise DataError(f"{where}: column 'golden' is empty; every record needs the chosen answer.")
    for dim in DIMENSIONS:
        column = REJECT_COLUMNS[dim]
        text = _text(record.get(column))
        if dim in mask and not text.strip():
            state = "missing" if column not in record else "empty"
            raise DataError(
                f"{where}: dimension {dim} is active in mask {mask} but column {column!r} is {state}; "
                f"give the rejection that fails {dim}, or drop {dim} from the mask."
            )
        out[column] = text
    out["dim_mask"] = [dim in mask for dim in DIMENSIONS]
    return out


def is_personaknob(source: Any) -> bool:
    """Whether ``source`` (path, Dataset or list of dicts) has PersonaKnob's columns."""
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        columns = set(source[0]) if len(source) else set()
    else:
        columns = set(_read_table(source).column_names)
    return {"prompt", "golden", "mask"} <= columns


def load_personaknob(source: Any, *, limit: int | None = None):
    """Load and validate PersonaKnob data into a ``datasets.Dataset``.

    ``source`` is a path to a CSV, JSON (list of records), JSONL file, a directory saved with
    ``Dataset.save_to_disk``, a ``Dataset`` or a list of dicts. The result has ``mask`` as a list of
    dimensions, ``dim_mask`` as K booleans in the order A, T, E, C, and every extra column.
    """
    import datasets

    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        table = [dict(r) for r in source]  # validate before Arrow sees mixed types
    else:
        table = _read_table(source)
    if limit is not None:
        table = (
            table[:limit]
            if isinstance(table, list)
            else table.select(range(min(limit, len(table))))
        )
    if len(table) == 0:
        raise DataError("the PersonaKnob data has no records.")
    rows = [validate_record(row, i) for i, row in enumerate(table)]
    return datasets.Dataset.from_list(rows)


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _encode(
    tokenizer,
    prompt: str,
    completion: str | None,
    use_chat_template: bool,
    system_prompt: str | None,
):
    if use_chat_template:
        messages = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": prompt})
        if completion is None:
            ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
        else:
            messages.append({"role": "assistant", "content": completion})
            ids = tokenizer.apply_chat_template(messages, tokenize=True)
        if isinstance(ids, Mapping) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    if completion is None:
        text = prompt
    elif prompt[-1:].isspace() or completion[:1].isspace():
        text = prompt + completion
    else:  # plain-text prompts rarely end with a separator; without one the words would fuse
        text = prompt + " " + completion
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if completion is not None and tokenizer.eos_token_id is not None:
        ids = ids + [tokenizer.eos_token_id]
    return list(ids)


def tokenize_personaknob(
    record: Mapping[str, Any],
    tokenizer,
    *,
    use_chat_template: bool | None = None,
    system_prompt: str | None = None,
) -> dict[str, Any]:
    """Token ids of one validated record: ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (K lists,
    empty for inactive dimensions) and ``dim_mask``.

    With a chat template the prompt is a user turn and each completion an assistant turn; the
    completion starts where the tokenised prompt (with generation prompt) and prompt+completion
    diverge, as in TRL. Without one, prompt and completion are joined (with a space unless
    either side already has one) and EOS appended.
    """
    if use_chat_template is None:
        use_chat_template = bool(getattr(tokenizer, "chat_template", None))
    prompt = record["prompt"]
    prompt_ids = _encode(tokenizer, prompt, None, use_chat_template, system_prompt)
    full = {
        "golden": _encode(tokenizer, prompt, record["golden"], use_chat_template, system_prompt)
    }
    dim_mask = list(record["dim_mask"])
    for k, dim in enumerate(DIMENSIONS):
        if dim_mask[k]:
            full[dim] = _encode(
                tokenizer, prompt, record[REJECT_COLUMNS[dim]], use_chat_template, system_prompt
            )
    prompt_len = min(_common_prefix_length(prompt_ids, ids) for ids in full.values())
    return {
        "prompt_ids": prompt_ids[:prompt_len],
        "chosen_ids": full["golden"][prompt_len:],
        "rejected_ids": [
            full[dim][prompt_len:] if dim_mask[k] else [] for k, dim in enumerate(DIMENSIONS)
        ],
        "dim_mask": dim_mask,
    }


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


@dataclass
class MultiNegCollator:
    """Pads tokenised records into one batch for a single forward pass.

    Output:
        ``input_ids``, ``attention_mask``, ``completion_mask``: (B + R, L) — rows 0..B-1 are the
            chosen completions, then the R active rejections, record by record in A, T, E, C order.
        ``dim_mask``: (B, K) bool.
        ``rejected_record``, ``rejected_dim``: (R,) — the record and dimension of each rejection row.
        ``ref_logps``: (B, K + 1) if the records carry precomputed reference log-probs
            (column 0 chosen, 1.. rejections), likewise ``modpo_rewards`` (B, K + 1, K).
    """

    pad_token_id: int
    max_length: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, completion_masks = [], []
        rejected_record, rejected_dim = [], []
        for ex in examples:
            sequences.append(ex["prompt_ids"] + ex["chosen_ids"])
            completion_masks.append([0] * len(ex["prompt_ids"]) + [1] * len(ex["chosen_ids"]))
        for b, ex in enumerate(examples):
            for k in range(K):
                if ex["dim_mask"][k]:
                    sequences.append(ex["prompt_ids"] + ex["rejected_ids"][k])
                    completion_masks.append(
                        [0] * len(ex["prompt_ids"]) + [1] * len(ex["rejected_ids"][k])
                    )
                    rejected_record.append(b)
                    rejected_dim.append(k)
        if self.max_length is not None:
            sequences = [s[: self.max_length] for s in sequences]
            completion_masks = [m[: self.max_length] for m in completion_masks]
        length = max(len(s) for s in sequences)
        n = len(sequences)
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        completion_mask = torch.zeros((n, length), dtype=torch.long)
        for i, (seq, cm) in enumerate(zip(sequences, completion_masks)):
            input_ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[i, : len(seq)] = 1
            completion_mask[i, : len(cm)] = torch.tensor(cm, dtype=torch.long)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
            "dim_mask": torch.tensor([ex["dim_mask"] for ex in examples], dtype=torch.bool),
            "rejected_record": torch.tensor(rejected_record, dtype=torch.long),
            "rejected_dim": torch.tensor(rejected_dim, dtype=torch.long),
        }
        if "ref_logps" in examples[0]:
            batch["ref_logps"] = torch.tensor(
                [ex["ref_logps"] for ex in examples], dtype=torch.float32
            )
        if "modpo_rewards" in examples[0]:
            batch["modpo_rewards"] = torch.tensor(
                [ex["modpo_rewards"] for ex in examples], dtype=torch.float32
            )
        return batch


# --------------------------------------------------------------------------------------------
# SFT data and pair flattening
# --------------------------------------------------------------------------------------------


def personaknob_to_sft(dataset):
    """PersonaKnob records as SFT prompt/completion pairs (prompt → golden)."""
    import datasets

    return datasets.Dataset.from_dict(
        {"prompt": list(dataset["prompt"]), "completion": list(dataset["golden"])}
    )


def load_sft_data(source: Any):
    """SFT data in prompt/completion form (``prompt``, ``completion`` columns), chat form
    (``messages``: a list of {role, content}), or PersonaKnob records (prompt → golden).

    Returned as a Dataset with either ``prompt``/``completion`` or ``messages`` columns, which TRL's
    SFTTrainer accepts as is.
    """
    import datasets

    table = _read_table(source)
    columns = set(table.column_names)
    if "messages" in columns:
        rows = []
        for i, row in enumerate(table):
            messages = row["messages"]
            if isinstance(messages, str):
                try:
                    messages = json.loads(messages)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"record {i}: column 'messages' is not a JSON list of messages: {exc}"
                    ) from exc
            if not messages or not all(
                isinstance(m, Mapping) and "role" in m and "content" in m for m in messages
            ):
                raise DataError(
                    f"record {i}: column 'messages' must be a non-empty list of {{role, content}}."
                )
            rows.append(
                {"messages": [{"role": m["role"], "content": str(m["content"])} for m in messages]}
            )
        return datasets.Dataset.from_list(rows)
    if {"prompt", "completion"} <= columns:
        for i, row in enumerate(table):
            if not _text(row["prompt"]).strip():
                raise DataError(f"record {i}: column 'prompt' is empty.")
            if not _text(row["completion"]).strip():
                raise DataError(f"record {i}: column 'completion' is empty.")
        return table.select_columns(["prompt", "completion"])
    if {"prompt", "golden", "mask"} <= columns:
        return personaknob_to_sft(load_personaknob(table))
    raise DataError(
        f"SFT data needs columns prompt+completion, messages, or PersonaKnob columns; found {sorted(columns)}."
    )


def flatten_to_pairs(dataset):
    """One (prompt, chosen, rejected) row per active rejection: the layout stock DPO needs.

    Used by the benchmark to compare with TRL's own DPOTrainer; it forwards the chosen completion
    once per rejection instead of once per prompt.
    """
    import datasets

    rows = {"prompt": [], "chosen": [], "rejected": [], "dimension": []}
    for rec in dataset:
        for k, dim in enumerate(DIMENSIONS):
            if rec["dim_mask"][k]:
                rows["prompt"].append(rec["prompt"])
                rows["chosen"].append(rec["golden"])
                rows["rejected"].append(rec[REJECT_COLUMNS[dim]])
                rows["dimension"].append(dim)
    return datasets.Dataset.from_dict(rows)
