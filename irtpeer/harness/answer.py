"""The answer stage: questions × evaluated models → the answers table.

Input columns: ``question`` (id), ``prompt`` (the user message), optionally ``dimensions`` (active
rubric dimensions, passed through to the judge stage) and ``system`` (a per-question system
message); every other column is passed through. Output columns: ``model, question, prompt,
answer`` + ``finish_reason, status, reason, call_id, prompt_tokens, completion_tokens`` + the
passed-through columns. A call that fails for good leaves ``answer`` null with ``status = "failed"``
(the judge stage skips it; a rerun retries it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .backend import Backend, ChatRequest, Sampling
from .errors import ConfigError
from .executor import CallUnit, execute_stage
from .judge import StageResult, default_paths
from .manifest import RunStats, build_manifest
from .tables import atomic_write_json, atomic_write_parquet, require_columns, table_name

__all__ = ["DEFAULT_ANSWER_SAMPLING", "answer_questions"]

DEFAULT_ANSWER_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=1024)


def _isnull(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def answer_questions(
    questions: pd.DataFrame,
    models: dict[str, Backend],
    *,
    store_path: str | Path,
    out: str | Path | None = None,
    manifest_path: str | Path | None = None,
    sampling: Sampling = DEFAULT_ANSWER_SAMPLING,
    system_prompt: str | None = None,
    progress: bool | None = None,
    settings: dict[str, Any] | None = None,
) -> StageResult:
    name = _check_questions(questions, models)
    records = questions.to_dict("records")
    units, meta = _plan_calls(records, name, models, sampling, system_prompt)

    if manifest_path is None and out is not None:
        manifest_path = default_paths(out)[1]
    stats = RunStats()
    run_settings = {
        "sampling": sampling.to_dict(),
        "system_prompt": system_prompt,
        "store": str(store_path),
        "questions": len(questions),
        **(settings or {}),
    }
    execute_stage(
        command="answer",
        units=units,
        backends=models,
        store_path=store_path,
        stats=stats,
        run_settings=run_settings,
        manifest_path=manifest_path,
        progress=progress,
    )

    passthrough = [c for c in questions.columns if c not in ("question", "prompt", "system")]
    table = _answers_table(units, meta, records, passthrough)
    manifest = _write_results(table, stats, run_settings, models, out, manifest_path)
    return StageResult(table, manifest)


def _check_questions(questions: pd.DataFrame, models: dict[str, Backend]) -> str:
    """Reject a questions table or settings the answer stage cannot run on; return its name."""
    require_columns(questions, ["question", "prompt"], "questions table")
    name = table_name(questions, "questions table")
    if not models:
        raise ConfigError("no model given; pass at least one --model MODEL")
    if questions.empty:
        raise ConfigError(f"{name} has no rows: give at least one question (columns question, "
                          "prompt)")
    dup = questions.duplicated(["question"], keep=False)
    if dup.any():
        raise ConfigError(
            f"{name} repeats question ids at rows {np.flatnonzero(dup.to_numpy())[:5].tolist()}; "
            "ids in the `question` column must be unique"
        )
    return name


def _plan_calls(
    records: list[dict],
    name: str,
    models: dict[str, Backend],
    sampling: Sampling,
    system_prompt: str | None,
) -> tuple[list[CallUnit], list[tuple[int, str]]]:
    """One answer call per (question, model), and each call's (row, model label)."""
    units, meta = [], []
    for i, row in enumerate(records):
        if _isnull(row["prompt"]):
            raise ConfigError(
                f"{name}, row {i} (question {row['question']!r}) has an empty `prompt`"
            )
        req = ChatRequest.make(_messages(row, system_prompt), sampling)
        for label in models:
            ctx = {"stage": "answer", "model": label, "question": str(row["question"])}
            units.append(CallUnit(label, req, ctx))
            meta.append((i, label))
    return units, meta


def _messages(row: dict, system_prompt: str | None) -> list[dict[str, str]]:
    """The chat messages of one question: its own system message or the default, then its prompt."""
    msgs = []
    sysmsg = (
        row.get("system") if "system" in row and not _isnull(row.get("system")) else system_prompt
    )
    if sysmsg:
        msgs.append({"role": "system", "content": str(sysmsg)})
    msgs.append({"role": "user", "content": str(row["prompt"])})
    return msgs


def _answers_table(units, meta, records, passthrough: list[str]) -> pd.DataFrame:
    """The answers table: a row per answer call (in call order) with the passed-through columns."""
    rows = []
    for u, (i, label) in zip(units, meta):
        q = records[i]
        res = u.results[-1] if u.results else None
        row = {
            "model": label,
            "question": str(q["question"]),
            "prompt": str(q["prompt"]),
            "answer": u.value if u.status == "ok" else None,
            "finish_reason": res.finish_reason if res else None,
            "status": u.status,
            "reason": u.reason,
            "call_id": u.call_id,
            "prompt_tokens": res.prompt_tokens if res else None,
            "completion_tokens": res.completion_tokens if res else None,
        }
        for c in passthrough:
            row[c] = q[c]
        rows.append(row)
    table = pd.DataFrame(rows)
    for c in ("prompt_tokens", "completion_tokens"):
        table[c] = pd.array(table[c], dtype="Int64")
    return table


def _write_results(
    table: pd.DataFrame,
    stats: RunStats,
    run_settings: dict[str, Any],
    models: dict[str, Backend],
    out: str | Path | None,
    manifest_path: str | Path | None,
) -> dict[str, Any]:
    """Count the failed answers, write the answers table and the manifest; return the manifest."""
    nfail = int((table["status"] == "failed").sum()) if len(table) else 0
    stats.add("answers_failed", nfail)
    outputs = {}
    if out is not None:
        atomic_write_parquet(table, out)
        outputs["answers"] = str(out)
    manifest = build_manifest(
        command="answer",
        settings=run_settings,
        stats=stats,
        backends=models,
        outputs=outputs,
        status="complete" if nfail == 0 else "incomplete",
        extra={"rows": len(table)},
    )
    if manifest_path is not None:
        atomic_write_json(manifest, manifest_path)
    return manifest
