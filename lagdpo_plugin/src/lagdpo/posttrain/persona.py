"""Persona vectors and activation steering (paper appendix E, after Chen et al. 2025).

Extraction: for contrast pairs that share a topic and differ only in persona framing (columns
``positive`` and ``negative``; a topic-matched ``neutral`` prompt stands in for ``negative`` when
that column is absent), the persona direction at decoder layer ``l`` is the mean over pairs of
h_l(positive) − h_l(negative), h_l being the output of decoder layer ``l`` (the residual stream)
at the last prompt token. Topic content is shared by both prompts of a pair and cancels.

Steering: a forward hook on decoder layer ``l`` adds ``sign · α · v_l`` to its output at every
position (prompt and generated) while generating greedily on held-out neutral prompts; α = 0
adds an exact zero, so it reproduces unsteered generation. Direction ``positive`` adds +α·v,
``negative`` adds −α·v. A judge scores each reply for the persona (a higher score = more of the
positive persona): irtpeer's harness judges on rubric dimensions, or a rule. A steered reply
succeeds when its score moves from the unsteered reply's score in the steering direction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._common import (
    ModelSpec,
    PosttrainError,
    decoder_layers,
    encode,
    format_prompt,
    irtpeer_io,
    load_model,
    parse_model_specs,
    progress,
    pyplot,
    read_column_table,
    release_memory,
    save_figure,
    write_csv,
)

__all__ = [
    "STEERING_COLUMNS",
    "Judge",
    "RuleJudge",
    "generate",
    "harness_judge",
    "layer_states",
    "load_vectors",
    "persona_vectors",
    "save_vectors",
    "steer",
    "steering_experiment",
]

STEERING_COLUMNS = [
    "model",
    "direction",
    "layer",
    "alpha",
    "n_prompts",
    "n_scored",
    "score_mean",
    "unsteered_mean",
    "shift",
    "success_rate",
]
DIRECTIONS = {"positive": 1.0, "negative": -1.0}

#: A judge scores replies: (prompts, replies) → one score per reply (None/NaN = unscored).
Judge = Callable[[list[str], list[str]], Sequence[float | None]]


def _output_tensor(output):
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def _capture_last(model, last_index):
    """Record each decoder layer's output at the rows' last prompt token."""
    layers = decoder_layers(model)
    captured: list[Any] = [None] * len(layers)
    handles = []
    for i, layer in enumerate(layers):

        def hook(_mod, _inp, output, i=i):
            h = _output_tensor(output)
            rows = np.arange(h.shape[0])
            captured[i] = h[rows, last_index()].float().cpu()

        handles.append(layer.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


def layer_states(
    model, tokenizer, prompts: list[str], batch_size: int = 8, chat_template: bool | None = None
) -> Iterator:
    """Yield per batch the decoder-layer outputs at the last prompt token: [batch, layers, hidden]."""
    import torch

    device = next(model.parameters()).device
    texts = [format_prompt(tokenizer, p, chat_template) for p in prompts]
    last = {}
    with _capture_last(model, lambda: last["idx"]) as captured:
        for s in range(0, len(texts), batch_size):
            batch = encode(tokenizer, texts[s : s + batch_size], device, padding_side="right")
            last["idx"] = (batch["attention_mask"].sum(dim=1) - 1).cpu().numpy()
            with torch.no_grad():
                model(**batch, use_cache=False)
            yield torch.stack(list(captured), dim=1)


def persona_vectors(
    model,
    tokenizer,
    positive: list[str],
    negative: list[str],
    batch_size: int = 8,
    chat_template: bool | None = None,
):
    """Mean over pairs of h_l(positive) − h_l(negative) for every decoder layer: float32
    [layers, hidden]; row ``l − 1`` is layer ``l``. Reduced batch by batch (a running sum)."""
    if len(positive) != len(negative) or not positive:
        raise PosttrainError("persona vectors need as many positive as negative prompts (≥ 1)")
    pos = _sum_states(model, tokenizer, positive, batch_size, chat_template, "positive")
    neg = _sum_states(model, tokenizer, negative, batch_size, chat_template, "negative")
    return ((pos - neg) / len(positive)).float()


def _sum_states(model, tokenizer, prompts, batch_size, chat_template, what):
    """Sum over prompts of the last-token layer states, in float64 (one pass, hooks of one pass
    at a time)."""
    total = None
    batches = -(-len(prompts) // batch_size)
    states = layer_states(model, tokenizer, prompts, batch_size, chat_template)
    for h in progress(states, f"{what} prompts", total=batches):
        s = h.double().sum(dim=0)
        total = s if total is None else total + s
    return total


@contextmanager
def steer(model, layer: int, vector, alpha: float):
    """Add ``alpha · vector`` to the output of decoder layer ``layer`` (1-based) on every position."""
    layers = decoder_layers(model)
    if not 1 <= layer <= len(layers):
        raise PosttrainError(f"--layers value {layer} is outside 1..{len(layers)} for this model")
    import torch

    p = next(model.parameters())
    delta = float(alpha) * torch.as_tensor(vector, dtype=p.dtype, device=p.device)

    def hook(_mod, _inp, output):
        if isinstance(output, tuple):
            return (output[0] + delta,) + tuple(output[1:])
        return output + delta

    handle = layers[layer - 1].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 32,
    batch_size: int = 8,
    chat_template: bool | None = None,
) -> list[str]:
    """Greedy replies (new tokens only, special tokens dropped), left-padded batches."""
    import torch

    device = next(model.parameters()).device
    texts = [format_prompt(tokenizer, p, chat_template) for p in prompts]
    out: list[str] = []
    for s in range(0, len(texts), batch_size):
        batch = encode(tokenizer, texts[s : s + batch_size], device, padding_side="left")
        with torch.no_grad():
            ids = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = ids[:, batch["input_ids"].shape[1] :]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


class RuleJudge:
    """Score = the number of case-insensitive matches of ``pattern`` in the reply."""

    def __init__(self, pattern: str):
        try:
            self.regex = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise PosttrainError(f"--rule {pattern!r} is not a valid regular expression: {exc}")
        self.pattern = pattern

    def __call__(self, prompts: list[str], replies: list[str]) -> list[float]:
        return [float(len(self.regex.findall(r or ""))) for r in replies]


def harness_judge(
    judges: dict[str, Any],
    dimensions: list[str],
    out_dir: str | Path,
    rubric: str = "persona",
    progress_bar: bool | None = None,
) -> Judge:
    """A judge backed by irtpeer's harness: each reply scored on the rubric ``dimensions`` by every
    judge; its score is the mean item score (unscored items left out, never 0). Calls are stored in
    ``out_dir/judge.calls.jsonl``, so a rerun resumes; ratings go to ``out_dir/ratings.parquet``."""
    from irtpeer.harness import judge_answers, load_rubric

    rub = load_rubric(rubric)
    unknown = [d for d in dimensions if d not in rub.dimension_ids]
    if unknown:
        raise PosttrainError(
            f"--dimension {unknown} is not in rubric {rub.id!r} (it has {rub.dimension_ids})"
        )
    out_dir = Path(out_dir)

    def judge(prompts: list[str], replies: list[str]) -> list[float | None]:
        answers = pd.DataFrame(
            {
                "model": "steered",
                "question": [f"r{i}" for i in range(len(replies))],
                "prompt": prompts,
                "answer": replies,
                "dimensions": ",".join(dimensions),
            }
        )
        res = judge_answers(
            answers,
            judges,
            rub,
            store_path=out_dir / "judge.calls.jsonl",
            out=out_dir / "ratings.parquet",
            progress=progress_bar,
        )
        mean = res.table.groupby("question")["score"].mean()
        return [
            float(mean[q]) if q in mean.index and pd.notna(mean[q]) else None
            for q in answers["question"]
        ]

    return judge


def save_vectors(vectors, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """One safetensors file: ``layer.{l}`` → the direction at decoder layer ``l`` (1-based)."""
    from safetensors.torch import save

    tensors = {f"layer.{i + 1}": v.contiguous() for i, v in enumerate(vectors)}
    data = save(tensors, metadata={k: str(v) for k, v in (metadata or {}).items()})
    return irtpeer_io().atomic_write_bytes(path, data)


def load_vectors(path: str | Path):
    """The [layers, hidden] tensor written by :func:`save_vectors`."""
    import torch
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise PosttrainError(f"--vectors file {str(path)!r} not found")
    t = load_file(str(path))
    keys = sorted(t, key=lambda k: int(k.split(".")[-1]))
    return torch.stack([t[k] for k in keys])


def _conditions(layers, alphas):
    for layer in layers:
        for direction in DIRECTIONS:
            for alpha in alphas:
                yield direction, layer, alpha


def _read_pairs(pairs) -> tuple[list[str], list[str]]:
    if isinstance(pairs, (str, Path)):
        df = read_column_table(pairs, "contrast pairs", ["positive"])
        other = "negative" if "negative" in df.columns else "neutral"
        df = read_column_table(pairs, "contrast pairs", ["positive", other])
        return df["positive"].astype(str).tolist(), df[other].astype(str).tolist()
    pos, neg = pairs
    return list(pos), list(neg)


def _model_generations(spec, pos, neg, prompts, layers, alphas, opts, vectors_dir):
    """Generations of one model: unsteered, then every (direction, layer, α)."""
    model, tok = load_model(spec.path, opts["device"])
    n_layers = len(decoder_layers(model))
    bad = [layer for layer in layers if not 1 <= layer <= n_layers]
    if bad:
        raise PosttrainError(f"--layers {bad} outside 1..{n_layers} for model {spec.label!r}")
    if opts["vectors"] is not None:
        vecs = load_vectors(opts["vectors"])
    else:
        vecs = persona_vectors(model, tok, pos, neg, opts["batch_size"], opts["chat_template"])
    if vectors_dir is not None and opts["vectors"] is None:
        save_vectors(
            vecs,
            Path(vectors_dir) / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', spec.label)}.safetensors",
            {"model": spec.label, "n_pairs": len(pos), "layers": "1-based decoder layers"},
        )
    if vecs.shape[0] != n_layers:
        raise PosttrainError(
            f"the vectors have {vecs.shape[0]} layers but model {spec.label!r} has {n_layers}"
        )
    gen_args = (opts["max_new_tokens"], opts["batch_size"], opts["chat_template"])
    rows = [(spec.label, "unsteered", 0, 0.0, r) for r in generate(model, tok, prompts, *gen_args)]
    conds = list(_conditions(layers, alphas))
    for direction, layer, alpha in progress(conds, f"steering {spec.label}", total=len(conds)):
        with steer(model, layer, vecs[layer - 1], DIRECTIONS[direction] * alpha):
            replies = generate(model, tok, prompts, *gen_args)
        rows += [(spec.label, direction, layer, float(alpha), r) for r in replies]
    del model
    release_memory()
    return rows


def summarize_steering(gens: pd.DataFrame) -> pd.DataFrame:
    """Success per (model, direction, layer, α) from scored generations (``score`` column)."""
    out = []
    for model, g in gens.groupby("model", sort=False):
        base = g[g["direction"] == "unsteered"].set_index("prompt_index")["score"]
        steered = g[g["direction"] != "unsteered"]
        for (direction, layer, alpha), c in steered.groupby(
            ["direction", "layer", "alpha"], sort=False
        ):
            s = c.set_index("prompt_index")["score"]
            ref = base.reindex(s.index)
            ok = s.notna() & ref.notna()
            moved = DIRECTIONS[direction] * (s[ok] - ref[ok])
            out.append(
                {
                    "model": model,
                    "direction": direction,
                    "layer": int(layer),
                    "alpha": float(alpha),
                    "n_prompts": len(s),
                    "n_scored": int(ok.sum()),
                    "score_mean": float(s[ok].mean()) if ok.any() else np.nan,
                    "unsteered_mean": float(ref[ok].mean()) if ok.any() else np.nan,
                    "shift": float(moved.mean()) if ok.any() else np.nan,
                    "success_rate": float((moved > 0).mean()) if ok.any() else np.nan,
                }
            )
    return pd.DataFrame(out, columns=STEERING_COLUMNS)


def steering_experiment(
    models: list[str] | list[ModelSpec],
    pairs: str | Path | tuple[list[str], list[str]],
    eval_prompts: str | Path | list[str],
    judge: Judge,
    out: str | Path | None = None,
    *,
    layers: list[int],
    alphas: list[float],
    vectors: str | Path | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 8,
    chat_template: bool | None = None,
    device: str | None = None,
    plot: bool = True,
) -> pd.DataFrame:
    """Extract each model's persona vectors (or use ``vectors``), steer it at each layer and α in
    both directions on ``eval_prompts``, score every reply with ``judge``.

    Writes ``out/vectors/<model>.safetensors``, ``out/generations.csv`` (every reply with its
    score), ``out/steering.csv`` (``STEERING_COLUMNS``) and ``out/steering.png``."""
    if plot and out is not None:
        pyplot()
    if not layers or not alphas:
        raise PosttrainError("give at least one --layers value and one --alphas value")
    pos, neg = _read_pairs(pairs) if vectors is None else ([], [])
    if isinstance(eval_prompts, (str, Path)):
        eval_prompts = read_column_table(eval_prompts, "evaluation prompts", ["prompt"])
        eval_prompts = eval_prompts["prompt"].astype(str).tolist()
    opts = {
        "device": device,
        "vectors": vectors,
        "batch_size": batch_size,
        "chat_template": chat_template,
        "max_new_tokens": max_new_tokens,
    }
    vectors_dir = Path(out) / "vectors" if out is not None else None
    rows = []
    for spec in parse_model_specs(list(models)):
        rows += _model_generations(spec, pos, neg, eval_prompts, layers, alphas, opts, vectors_dir)
    gens = pd.DataFrame(rows, columns=["model", "direction", "layer", "alpha", "reply"])
    n = len(eval_prompts)
    gens.insert(4, "prompt_index", np.tile(np.arange(n), len(gens) // n))
    gens.insert(5, "prompt", [eval_prompts[i] for i in gens["prompt_index"]])
    scores = list(judge(gens["prompt"].tolist(), gens["reply"].tolist()))
    if len(scores) != len(gens):
        raise PosttrainError(f"the judge returned {len(scores)} scores for {len(gens)} replies")
    gens["score"] = pd.to_numeric(pd.Series(scores, dtype=object), errors="coerce").to_numpy()
    table = summarize_steering(gens)
    if out is not None:
        write_csv(gens, Path(out) / "generations.csv")
        write_csv(table, Path(out) / "steering.csv")
        if plot:
            plot_steering(table, Path(out) / "steering.png")
    return table


def plot_steering(table: pd.DataFrame, path: str | Path) -> Path:
    """Success rate against α, one panel per direction, one line per (model, layer)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, direction in zip(axes, DIRECTIONS):
        sub = table[table["direction"] == direction]
        for (model, layer), g in sub.groupby(["model", "layer"], sort=False):
            g = g.sort_values("alpha")
            ax.plot(g["alpha"], g["success_rate"], marker="o", ms=3, label=f"{model} L{layer}")
        sign = "+" if direction == "positive" else "−"
        ax.set_title(f"{direction} ({sign}α·v)")
        ax.set_xlabel("α")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("steering success rate")
    axes[-1].legend(fontsize=7)
    try:
        return save_figure(fig, Path(path))
    finally:
        plt.close(fig)
