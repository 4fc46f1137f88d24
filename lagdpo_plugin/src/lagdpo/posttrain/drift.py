"""Representational drift from the base model (paper §6.4, Figure 8).

For each prompt, the hidden state of the last prompt token at every layer, its cosine similarity to
the base model's hidden state for the same prompt and layer, averaged over prompts with a
percentile bootstrap interval (prompts resampled, the same resample for every layer).

Layers are numbered as transformers' ``output_hidden_states`` returns them: 0 is the embedding
output, ``l`` the output of decoder layer ``l``; the last one is after the model's final norm.
Only the last-token vectors are kept (the base model's, n_prompts × layers × hidden, on the CPU);
each other model is reduced to cosines batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ._common import (
    ModelSpec,
    PosttrainError,
    encode,
    format_prompt,
    load_model,
    parse_model_specs,
    progress,
    pyplot,
    read_column_table,
    release_memory,
    save_figure,
    write_csv,
)

__all__ = ["DRIFT_COLUMNS", "bootstrap_mean", "drift", "last_token_states", "plot_drift"]

DRIFT_COLUMNS = ["model", "layer", "cosine_mean", "cosine_lo", "cosine_hi", "n_prompts"]


def last_token_states(
    model, tokenizer, prompts: list[str], batch_size: int = 8, chat_template: bool | None = None
) -> Iterator:
    """Yield, batch by batch, the last-prompt-token hidden states: float32 [batch, layers+1, hidden].

    Batches are right-padded, so every token sees exactly the tokens it sees unpadded."""
    import torch

    device = next(model.parameters()).device
    texts = [format_prompt(tokenizer, p, chat_template) for p in prompts]
    starts = range(0, len(texts), batch_size)
    for s in progress(starts, "hidden states", total=len(starts)):
        batch = encode(tokenizer, texts[s : s + batch_size], device, padding_side="right")
        with torch.no_grad():
            out = model(**batch, output_hidden_states=True, use_cache=False)
        last = batch["attention_mask"].sum(dim=1) - 1
        rows = torch.arange(last.shape[0], device=device)
        states = torch.stack([h[rows, last] for h in out.hidden_states], dim=1)
        yield states.float().cpu()


def _cosines(a, b):
    import torch

    a64, b64 = a.double(), b.double()
    return torch.nn.functional.cosine_similarity(a64, b64, dim=-1, eps=1e-12).numpy()


def bootstrap_mean(
    values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means of ``values`` [n, k] and percentile bootstrap limits (rows resampled jointly).

    Resampling weights are multinomial counts, so memory is n_boot × n, not n_boot × n × k."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[0]
    mean = values.mean(axis=0)
    if n < 2 or n_boot < 1:
        return mean, np.full_like(mean, np.nan), np.full_like(mean, np.nan)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n
    boots = weights @ values
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [tail, 1.0 - tail], axis=0)
    return mean, lo, hi


def _model_cosines(spec: ModelSpec, base_states, prompts, batch_size, chat_template, device):
    model, tok = load_model(spec.path, device)
    out = []
    pos = 0
    for states in last_token_states(model, tok, prompts, batch_size, chat_template):
        ref = base_states[pos : pos + states.shape[0]]
        if states.shape[1:] != ref.shape[1:]:
            raise PosttrainError(
                f"model {spec.label!r} has hidden states of shape {tuple(states.shape[1:])} "
                f"(layers+1, hidden) but the base model {tuple(ref.shape[1:])}; drift compares "
                "models of one architecture"
            )
        out.append(_cosines(states, ref))
        pos += states.shape[0]
    del model
    release_memory()
    return np.concatenate(out, axis=0)


def drift(
    base: str | ModelSpec,
    models: list[str] | list[ModelSpec],
    prompts: str | Path | list[str],
    out: str | Path | None = None,
    *,
    batch_size: int = 8,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    chat_template: bool | None = None,
    device: str | None = None,
    plot: bool = True,
) -> pd.DataFrame:
    """Cosine of each model's last-prompt-token states to the base model's, per layer.

    Writes ``out/drift.csv`` (``DRIFT_COLUMNS``), ``out/drift_per_prompt.csv`` and, with ``plot``,
    ``out/drift.png``. Returns the drift table."""
    if plot and out is not None:
        pyplot()  # fail before the forward passes if matplotlib is missing
    if isinstance(prompts, (str, Path)):
        prompts = read_column_table(prompts, "prompts", ["prompt"])["prompt"].astype(str).tolist()
    base_spec = parse_model_specs([base])[0]
    specs = parse_model_specs(list(models))
    model, tok = load_model(base_spec.path, device)
    base_states = torch_cat(last_token_states(model, tok, prompts, batch_size, chat_template))
    del model
    release_memory()
    rows, per_prompt = [], []
    for spec in specs:
        cos = _model_cosines(spec, base_states, prompts, batch_size, chat_template, device)
        mean, lo, hi = bootstrap_mean(cos, n_boot, level, seed)
        for layer in range(cos.shape[1]):
            rows.append([spec.label, layer, mean[layer], lo[layer], hi[layer], cos.shape[0]])
        per_prompt.append(
            pd.DataFrame(
                {
                    "model": spec.label,
                    "prompt_index": np.repeat(np.arange(cos.shape[0]), cos.shape[1]),
                    "layer": np.tile(np.arange(cos.shape[1]), cos.shape[0]),
                    "cosine": cos.reshape(-1),
                }
            )
        )
    table = pd.DataFrame(rows, columns=DRIFT_COLUMNS)
    if out is not None:
        out = Path(out)
        write_csv(pd.concat(per_prompt, ignore_index=True), out / "drift_per_prompt.csv")
        write_csv(table, out / "drift.csv")
        if plot:
            plot_drift(table, out / "drift.png", base_label=base_spec.label)
    return table


def torch_cat(chunks):
    import torch

    return torch.cat(list(chunks), dim=0)


def plot_drift(table: pd.DataFrame, path: str | Path, base_label: str = "base") -> Path:
    """Cosine to the base model against layer, one line per model with its bootstrap band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, g in table.groupby("model", sort=False):
        g = g.sort_values("layer")
        (line,) = ax.plot(g["layer"], g["cosine_mean"], marker="o", ms=3, label=str(label))
        ax.fill_between(
            g["layer"], g["cosine_lo"], g["cosine_hi"], alpha=0.2, color=line.get_color()
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(f"cosine to {base_label}")
    ax.set_title("Last-prompt-token representation drift")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    try:
        return save_figure(fig, Path(path))
    finally:
        plt.close(fig)
