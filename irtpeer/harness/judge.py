"""The judge stage: answers × judges × rubric dimensions → the ratings table (DESIGN §2).

One judge call per (answer, judge, dimension, replicate) returns that dimension's items as strict
JSON. Its key holds the evaluated model, question, judge label, rubric hash and replicate besides
the content, so two models that gave the same answer are judged by two calls. A reply that fails validation is re-asked once; if the second reply fails too, every item of
that call gets a null score with ``parse_status = "invalid"`` and the reason — never a 0. A call
that fails for good (a 400, retries exhausted) gets ``parse_status = "failed"`` and the error; a
rerun of the same command retries exactly those calls and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .backend import Backend, ChatRequest, ChatResult, Sampling
from .errors import ConfigError, RubricError
from .executor import CallUnit, execute_stage
from .manifest import RunStats, build_manifest
from .rubrics import Rubric
from .tables import atomic_write_json, atomic_write_parquet, require_columns, table_name

__all__ = ["RATING_COLUMNS", "StageResult", "default_paths", "judge_answers", "parse_dimensions"]

RATING_COLUMNS = [
    "model",
    "question",
    "judge",
    "item",
    "dimension",
    "score",
    "raw",
    "raw_reask",
    "parse_status",
    "reason",
    "call_id",
    "prompt_tokens",
    "completion_tokens",
    "rubric_id",
    "rubric_version",
    "rubric_hash",
]
DEFAULT_JUDGE_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=256)


@dataclass
class StageResult:
    table: pd.DataFrame
    manifest: dict[str, Any]

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"


def default_paths(out: str | Path) -> tuple[Path, Path]:
    """(store, manifest) paths beside an output table: ``x.parquet`` → ``x.calls.jsonl``, ``x.manifest.json``."""
    out = Path(out)
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + ".calls.jsonl"), out.with_name(stem + ".manifest.json")


def parse_dimensions(value: Any, rubric: Rubric, where: str) -> list[str]:
    """The active dimensions of one question: a list, a JSON list, or "A,T" / "A T"; empty = all."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return rubric.dimension_ids
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return rubric.dimension_ids
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise ConfigError(
                    f"{where}: `dimensions` value {s!r} is not a valid JSON list"
                ) from None
        else:
            value = [t for t in s.replace(",", " ").split() if t]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(
            f'{where}: `dimensions` value {value!r} must be a list like ["A", "T"] or "A,T"'
        )
    dims = list(dict.fromkeys(str(v) for v in value))  # a repeated dimension is judged once
    known = set(rubric.dimension_ids)
    bad = [d for d in dims if d not in known]
    if bad:
        raise RubricError(
            f"{where}: `dimensions` names {bad}, which rubric {rubric.id!r} lacks "
            f"(it has {rubric.dimension_ids}); fix the column or use another --rubric"
        )
    return dims or rubric.dimension_ids


def _reasker(rubric: Rubric, dim):
    def reask(req: ChatRequest, res: ChatResult, reason: str) -> ChatRequest:
        msgs = req.message_dicts() + [
            {"role": "assistant", "content": res.text or ""},
            rubric.reask_message(dim, reason),
        ]
        return ChatRequest.make(msgs, req.sampling, req.schema, req.schema_name)

    return reask


def _validator(rubric: Rubric, dim):
    from .rubrics import validate_reply

    def validate(res: ChatResult):
        return validate_reply(rubric, dim, res.text, res.finish_reason)

    return validate


def judge_answers(
    answers: pd.DataFrame,
    judges: dict[str, Backend],
    rubric: Rubric,
    *,
    store_path: str | Path,
    out: str | Path | None = None,
    manifest_path: str | Path | None = None,
    sampling: Sampling = DEFAULT_JUDGE_SAMPLING,
    replicates: int = 1,
    reask: bool = True,
    progress: bool | None = None,
    settings: dict[str, Any] | None = None,
) -> StageResult:
    """Score every answer with every judge on its active rubric dimensions."""
    name = _check_answers(answers, judges, replicates)
    records = answers.to_dict("records")
    has_dims = "dimensions" in answers.columns
    units, meta, skipped = _plan_calls(
        records, has_dims, name, judges, rubric, sampling, replicates, reask
    )

    store_path = Path(store_path)
    if manifest_path is None and out is not None:
        manifest_path = default_paths(out)[1]
    stats = RunStats()
    stats.add("answers_without_text", skipped)
    run_settings = {
        "sampling": sampling.to_dict(),
        "replicates": replicates,
        "reask": reask,
        "store": str(store_path),
        "answers_rows": len(answers),
        **(settings or {}),
    }
    execute_stage(
        command="judge",
        units=units,
        backends=judges,
        store_path=store_path,
        stats=stats,
        run_settings=run_settings,
        manifest_path=manifest_path,
        progress=progress,
        rubrics=[rubric],
    )

    table = _ratings_table(units, meta, records, rubric, replicates)
    manifest = _write_results(table, units, stats, run_settings, judges, rubric, out, manifest_path)
    return StageResult(table, manifest)


def _check_answers(answers: pd.DataFrame, judges: dict[str, Backend], replicates: int) -> str:
    """Reject an answers table or settings the judge stage cannot run on; return the table's name."""
    require_columns(answers, ["model", "question", "prompt", "answer"], "answers table")
    name = table_name(answers, "answers table")
    if not judges:
        raise ConfigError("no judge given; pass at least one --judge MODEL")
    if replicates < 1:
        raise ConfigError(f"--replicates must be at least 1, got {replicates}")
    if answers.empty:
        raise ConfigError(f"{name} has no rows: run `irtpeer answer` first, or give a table with "
                          "columns model, question, prompt, answer")
    dup = answers.duplicated(["model", "question"], keep=False)
    if dup.any():
        rows = np.flatnonzero(dup.to_numpy())[:5].tolist()
        raise ConfigError(
            f"{name} has several rows for the same (model, question) at rows {rows}; "
            "keep one answer per model and question"
        )
    return name


def _plan_calls(
    records: list[dict],
    has_dims: bool,
    name: str,
    judges: dict[str, Backend],
    rubric: Rubric,
    sampling: Sampling,
    replicates: int,
    reask: bool,
) -> tuple[list[CallUnit], list[tuple[int, str, str, int]], int]:
    """The judge calls of every answer with text, each call's (row, judge, dim, replicate), and
    the number of answers without text."""
    units: list[CallUnit] = []
    meta: list[tuple[int, str, str, int]] = []  # (row, judge, dim, replicate)
    skipped = 0
    dims_cache = {
        d.id: (d, rubric.json_schema(d), _validator(rubric, d), _reasker(rubric, d))
        for d in rubric.dimensions
    }
    for i, row in enumerate(records):
        ans = row["answer"]
        if ans is None or (isinstance(ans, float) and np.isnan(ans)):
            skipped += 1
            continue
        dims = (
            parse_dimensions(row["dimensions"], rubric, f"{name}, row {i}")
            if has_dims
            else rubric.dimension_ids
        )
        for did in dims:
            dim, schema, validate, reasker = dims_cache[did]
            msgs = rubric.messages(dim, row)
            for jlabel in judges:
                for r in range(replicates):
                    units.append(
                        CallUnit(
                            jlabel,
                            ChatRequest.make(msgs, sampling, schema, f"rubric_{did}"),
                            _call_context(row, jlabel, rubric, r),
                            validate=validate,
                            reask=reasker if reask else None,
                        )
                    )
                    meta.append((i, jlabel, did, r))
    return units, meta, skipped


def _call_context(row: dict, jlabel: str, rubric: Rubric, replicate: int) -> dict[str, Any]:
    """The identity of one judge call besides its request (part of its store key)."""
    return {
        "stage": "judge",
        "model": str(row["model"]),
        "question": str(row["question"]),
        "judge": jlabel,
        "rubric_hash": rubric.hash,
        "replicate": replicate,
    }


def _write_results(
    table: pd.DataFrame,
    units: list[CallUnit],
    stats: RunStats,
    run_settings: dict[str, Any],
    judges: dict[str, Backend],
    rubric: Rubric,
    out: str | Path | None,
    manifest_path: str | Path | None,
) -> dict[str, Any]:
    """Count the judgments, write the ratings table and the manifest; return the manifest."""
    nfail = sum(u.status == "failed" for u in units)
    stats.add("judgments_failed", nfail)
    stats.add("judgments_ok", sum(u.status in ("ok", "ok_after_reask") for u in units))
    status = "complete" if nfail == 0 else "incomplete"
    outputs = {}
    if out is not None:
        atomic_write_parquet(table, out)
        outputs["ratings"] = str(out)
    manifest = build_manifest(
        command="judge",
        settings=run_settings,
        stats=stats,
        backends=judges,
        rubrics=[rubric],
        outputs=outputs,
        status=status,
        extra={"rows": len(table), "calls": len(units)},
    )
    if manifest_path is not None:
        atomic_write_json(manifest, manifest_path)
    return manifest


def _ratings_table(units, meta, records, rubric: Rubric, replicates: int) -> pd.DataFrame:
    """The ratings table: one row per rubric item of every judge call, in call order."""
    cols: dict[str, list] = {c: [] for c in RATING_COLUMNS}
    reps: list[int] = []
    for u, (i, jlabel, did, r) in zip(units, meta):
        row = records[i]
        dim = rubric.dimension(did)
        first = u.results[0] if u.results else None
        second = u.results[1] if len(u.results) > 1 else None
        ptok = sum(int(x.prompt_tokens or 0) for x in u.results) if u.results else None
        ctok = sum(int(x.completion_tokens or 0) for x in u.results) if u.results else None
        scores = u.value if u.status in ("ok", "ok_after_reask") else None
        for item in dim.items:
            cols["model"].append(str(row["model"]))
            cols["question"].append(str(row["question"]))
            cols["judge"].append(jlabel)
            cols["item"].append(item.id)
            cols["dimension"].append(did)
            cols["score"].append(scores[item.id] if scores is not None else None)
            cols["raw"].append(first.text if first else None)
            cols["raw_reask"].append(second.text if second else None)
            cols["parse_status"].append(u.status)
            cols["reason"].append(u.reason)
            cols["call_id"].append(u.call_id)
            cols["prompt_tokens"].append(ptok)
            cols["completion_tokens"].append(ctok)
            cols["rubric_id"].append(rubric.id)
            cols["rubric_version"].append(rubric.version)
            cols["rubric_hash"].append(rubric.hash)
            reps.append(r)
    df = pd.DataFrame(cols)
    df["score"] = pd.array(df["score"], dtype="Int64")
    df["prompt_tokens"] = pd.array(df["prompt_tokens"], dtype="Int64")
    df["completion_tokens"] = pd.array(df["completion_tokens"], dtype="Int64")
    if replicates > 1:
        df.insert(6, "replicate", reps)
    return df
