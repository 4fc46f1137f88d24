"""What the three post-training tools share: model specs, loading (full checkpoints and LoRA
adapters), prompt tables, chat formatting, the decoder-layer list, and output writing.

Tables are read and files written through irtpeer's one reader/writer (``irtpeer._io``): the
post-training tools sit between the plug-in and irtpeer's harness, so they need irtpeer installed
(it is, in an irtpeer checkout: ``pip install -e . -e ./lagdpo_plugin``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LagDPOError


class PosttrainError(LagDPOError, ValueError):
    """Bad input to `lagdpo utility`, `lagdpo drift` or `lagdpo persona-vector`."""


def require(module: str, extra: str, package: str | None = None):
    """Import an optional dependency, or raise with the install hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PosttrainError(
            f"this command needs {package or module}, which is not installed; install it with "
            f"`pip install 'lagdpo-plugin[{extra}]'`"
        ) from None


def irtpeer_io():
    try:
        from irtpeer import _io
    except ImportError:
        raise PosttrainError(
            "the post-training tools need irtpeer; install it from the irtpeer checkout "
            "with `pip install -e .`"
        ) from None
    return _io


@dataclass(frozen=True)
class ModelSpec:
    """A model to analyse: its label in the tables and its path (a checkpoint or a LoRA adapter)."""

    label: str
    path: str


def parse_model_spec(spec: str) -> ModelSpec:
    """``PATH`` (labelled by the path as given) or ``LABEL=PATH``."""
    label, sep, path = spec.partition("=")
    if sep and label and "/" not in label and os.sep not in label and not os.path.exists(spec):
        return ModelSpec(label, path)
    return ModelSpec(spec, spec)


def parse_model_specs(specs: list[str] | list[ModelSpec]) -> list[ModelSpec]:
    out = [s if isinstance(s, ModelSpec) else parse_model_spec(str(s)) for s in specs]
    labels = [m.label for m in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise PosttrainError(
            f"--model labels must be unique, {dup} appear twice; label them as NAME=PATH"
        )
    return out


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def adapter_base(path: str) -> str | None:
    """The base model of a LoRA adapter directory, or None for a full checkpoint."""
    cfg = Path(path) / "adapter_config.json"
    if not cfg.is_file():
        return None
    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
    if not base:
        raise PosttrainError(
            f"adapter {path!r}: adapter_config.json has no base_model_name_or_path; set it"
        )
    return base


def load_model(path: str, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer) in eval mode; a LoRA adapter is merged into its base model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path)
    if not p.exists():
        raise PosttrainError(f"model path {path!r} does not exist; give a checkpoint directory")
    base = adapter_base(path)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(base or path, dtype=torch_dtype)
        if base is not None:
            peft = require("peft", "peft")
            model = peft.PeftModel.from_pretrained(model, path).merge_and_unload()
        tok_path = path if (p / "tokenizer_config.json").exists() else (base or path)
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PosttrainError(f"could not load model {path!r}: {first}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(pick_device(device)).eval()
    return model, tokenizer


def release_memory() -> None:
    """After ``del model``: collect it and give its GPU memory back before the next one loads."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def read_column_table(path: str | os.PathLike, what: str, columns: list[str]):
    """A CSV/JSONL/parquet table with the given text columns (rows with an empty cell refused)."""
    io = irtpeer_io()
    df = io.read_table(path, what, error=PosttrainError)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise PosttrainError(
            f"{what} file {str(path)!r} lacks column(s) {missing} (it has {list(df.columns)}); "
            "add them"
        )
    for c in columns:
        empty = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if empty.any():
            rows = [int(i) for i in empty.to_numpy().nonzero()[0][:5]]
            raise PosttrainError(
                f"{what} file {str(path)!r}: column {c!r} is empty at rows {rows}; fill or drop them"
            )
    if len(df) == 0:
        raise PosttrainError(f"{what} file {str(path)!r} has no rows")
    return df


def format_prompt(tokenizer, prompt: str, chat_template: bool | None = None) -> str:
    """The text the model sees: the chat template with a generation prompt when the tokenizer has
    one (``chat_template=None`` means "if available"), else the raw prompt."""
    use = bool(tokenizer.chat_template) if chat_template is None else chat_template
    if not use:
        return prompt
    if not tokenizer.chat_template:
        raise PosttrainError("--chat-template was asked for but the tokenizer has none")
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )


def encode(tokenizer, texts: list[str], device, padding_side: str = "right"):
    """Tokenise without adding special tokens twice (a chat template already has them)."""
    tokenizer.padding_side = padding_side
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def decoder_layers(model) -> list[Any]:
    """The list of decoder blocks (Llama/Qwen/Mistral ``model.layers``, GPT-2 ``transformer.h``,
    GPT-NeoX ``gpt_neox.layers``)."""
    for attr in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return list(obj)
    raise PosttrainError(
        f"cannot find the decoder layers of {type(model).__name__}; supported: models with "
        "model.layers, transformer.h or gpt_neox.layers"
    )


def progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def write_csv(df, path: Path) -> Path:
    return irtpeer_io().atomic_write_csv(df, path)


def write_json(obj, path: Path) -> Path:
    return irtpeer_io().atomic_write_json(obj, path)


def save_figure(fig, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    return irtpeer_io().atomic_write_bytes(path, buf.getvalue())


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    mpl = require("matplotlib", "plot", "matplotlib")
    mpl.use("Agg")
    import matplotlib.pyplot as plt

    return plt
