"""Statistics of a build, like the paper's appendix J: instances per portion config, task format,
source category and mask cardinality; lengths of references against negatives (the paper's check
that length cannot be a shortcut: the two distributions should overlap); verifier pass rates;
regenerations by cause; calls. One tidy table ``statistic, group, value`` in ``DIR/stats.csv``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ... import _io

__all__ = ["build_statistics", "format_statistics", "length_overlap", "write_statistics"]


def length_overlap(a: list[int], b: list[int], bins: int = 20) -> float | None:
    """Overlap of two length distributions: the sum over shared bins of the smaller share
    (1 = identical histograms, 0 = disjoint)."""
    if not a or not b:
        return None
    lo, hi = min(min(a), min(b)), max(max(a), max(b))
    if lo == hi:
        return 1.0
    edges = np.linspace(lo, hi, bins + 1)
    ha = np.histogram(a, edges)[0] / len(a)
    hb = np.histogram(b, edges)[0] / len(b)
    return float(np.minimum(ha, hb).sum())


def _words(text: str | None) -> int:
    return len(str(text or "").split())


def _counter(tokenizer):
    """Length of a text in tokens of ``tokenizer``, or in whitespace-separated words without one."""
    if tokenizer is None:
        return "words", _words
    return "tokens", lambda t: len(tokenizer(str(t or ""), add_special_tokens=False)["input_ids"])


def _describe(rows: list, unit: str, name: str, values: list[int]) -> None:
    if not values:
        return
    v = np.asarray(values, dtype=float)
    stat = f"length_{unit}_{name}"
    rows += [
        (stat, "n", len(v)),
        (stat, "mean", round(float(v.mean()), 2)),
        (stat, "median", round(float(np.median(v)), 2)),
        (stat, "p10", round(float(np.percentile(v, 10)), 2)),
        (stat, "p90", round(float(np.percentile(v, 90)), 2)),
    ]


def build_statistics(instances, cfg, run_stats) -> pd.DataFrame:
    rows: list[tuple[str, str, object]] = []
    status = Counter(i.status for i in instances)
    for st in ("verified", "dropped", "failed", "pending"):
        rows.append(("instances", st, status.get(st, 0)))
    ver = [i for i in instances if i.status == "verified"]
    planned = Counter(i.portion for i in instances)
    got = Counter(i.portion for i in ver)
    for p in cfg.portions:
        rows.append(("portion_planned", p.name, planned.get(p.name, 0)))
        rows.append(("portion_verified", p.name, got.get(p.name, 0)))
    n = len(ver)
    for key, stat in (("task_format", "task_format"), ("source_category", "source_category")):
        for k, c in sorted(Counter(i.scenario[key] for i in ver).items()):
            rows.append((stat, k, c))
    for k, c in sorted(Counter(len(i.dims) for i in ver).items()):
        rows.append(("mask_cardinality_pct", str(k), round(100 * c / n, 1)))
    unit, size = _counter(getattr(cfg, "length_tokenizer", None))
    refs = [size(i.reference) for i in ver]
    negs = [size(t) for i in ver for t in i.negatives.values()]
    _describe(rows, unit, "reference", refs)
    _describe(rows, unit, "negative", negs)
    for d in cfg.dimensions:
        per = [size(i.negatives[d]) for i in ver if d in i.negatives]
        _describe(rows, unit, f"negative_{d}", per)
    ov = length_overlap(refs, negs)
    if ov is not None:
        rows.append(("length_overlap_reference_negative", "histogram_overlap", round(ov, 4)))
    checks: Counter = Counter()
    passes: Counter = Counter()
    for i in instances:
        for v in i.verifications:
            for tag, ok in v.items():
                key = tag.split("_")[0]
                checks[key] += 1
                passes[key] += bool(ok)
    for key in ("V", "R", "N"):
        if checks[key]:
            rows.append(("verifier_pass_rate", key, round(passes[key] / checks[key], 4)))
    rounds = [v for i in instances for v in i.verifications]
    if rounds:
        rows.append(
            (
                "verifier_pass_rate",
                "instance",
                round(sum(all(v.values()) for v in rounds) / len(rounds), 4),
            )
        )
    regen = Counter()
    for i in instances:
        regen.update(i.regens)
    for cause in ("attribution", "verify_V", "verify_R", "verify_N", "invalid_reply"):
        rows.append(("regenerations", cause, regen.get(cause, 0)))
    for k in ("calls_planned", "calls_cached", "calls_done", "reasks", "requests_sent"):
        rows.append(("calls", k, run_stats.counts.get(k, 0)))
    return pd.DataFrame(
        {
            "statistic": [r[0] for r in rows],
            "group": [r[1] for r in rows],
            "value": pd.Series([r[2] for r in rows], dtype=object),
        }
    )


def write_statistics(table: pd.DataFrame, out: Path) -> Path:
    return _io.atomic_write_csv(table, Path(out) / "stats.csv")


def format_statistics(table: pd.DataFrame) -> str:
    w1 = max(len(s) for s in table["statistic"]) if len(table) else 10
    w2 = max(len(str(s)) for s in table["group"]) if len(table) else 10
    lines = [f"{'statistic':<{w1}}  {'group':<{w2}}  value"]
    lines += [f"{s:<{w1}}  {g!s:<{w2}}  {v}" for s, g, v in table.itertuples(index=False)]
    return "\n".join(lines)
