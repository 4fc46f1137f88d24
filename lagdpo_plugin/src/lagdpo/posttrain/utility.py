"""General ability after persona training (paper §6.4, Figure 7): lm-evaluation-harness on each
checkpoint with one set of settings, exact-match accuracy per task and model, and the paired
difference from the base model over the same items.

Accuracy is the task's per-item metric (``exact_match`` when the task reports it, else ``acc``)
averaged over items; its standard error is the item standard deviation / √n (lm-eval's
``mean_stderr``). A group (``mmlu``, ``bbh``) pools the items of its tasks, which is lm-eval's
size-weighted group mean. The difference from the base model is paired over items: its standard
error is sd(model − base)/√n, and the test is McNemar's exact test for 0/1 items (a paired t-test
otherwise).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._common import (
    ModelSpec,
    PosttrainError,
    adapter_base,
    parse_model_specs,
    pick_device,
    release_memory,
    require,
    write_csv,
    write_json,
)

__all__ = ["UTILITY_COLUMNS", "items_table", "paired_difference", "summarize_items", "utility"]

UTILITY_COLUMNS = [
    "model",
    "task",
    "kind",
    "metric",
    "n_items",
    "accuracy",
    "accuracy_se",
    "base",
    "diff",
    "diff_se",
    "diff_lo",
    "diff_hi",
    "test",
    "p_value",
    "n_better",
    "n_worse",
]
PREFERRED_METRICS = ("exact_match", "acc")


def task_manager(include_path: list[str] | None, tasks: list[str]):
    """lm-eval's TaskManager; built-in tasks are indexed only when a requested task needs them."""
    lm_tasks = require("lm_eval.tasks", "utility", "lm-eval")
    paths = [str(p) for p in include_path or []]
    for p in paths:
        if not Path(p).is_dir():
            raise PosttrainError(f"--include-path {p!r} is not a folder of task YAML files")
    if paths:
        tm = lm_tasks.TaskManager(include_path=paths, include_defaults=False)
        if all(t in tm.all_tasks for t in tasks):
            return tm
    tm = lm_tasks.TaskManager(include_path=paths or None)
    unknown = [t for t in tasks if t not in tm.all_tasks]
    if unknown:
        close = difflib.get_close_matches(unknown[0], tm.all_tasks, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise PosttrainError(
            f"--tasks names unknown task(s) {unknown}{hint}; list lm-eval's tasks with "
            "`lm-eval ls tasks`, or give --include-path DIR for local task YAMLs"
        )
    return tm


def _model_args(spec: ModelSpec, dtype: str) -> dict[str, Any]:
    base = adapter_base(spec.path)
    if not Path(spec.path).exists():
        raise PosttrainError(f"--model {spec.path!r} does not exist; give a checkpoint directory")
    args: dict[str, Any] = {"pretrained": base or spec.path, "dtype": dtype}
    if base is not None:
        args["peft"] = spec.path
    return args


def _evaluate(spec: ModelSpec, tasks: list[str], tm, settings: dict[str, Any]) -> dict:
    lm_eval = require("lm_eval", "utility", "lm-eval")
    chat = bool(settings["apply_chat_template"])
    seed = int(settings["seed"])
    try:
        return lm_eval.simple_evaluate(
            model="hf",
            model_args=_model_args(spec, settings["dtype"]),
            tasks=tasks,
            task_manager=tm,
            num_fewshot=settings["num_fewshot"],
            limit=settings["limit"],
            batch_size=settings["batch_size"],
            device=pick_device(settings["device"]),
            apply_chat_template=chat,
            fewshot_as_multiturn=chat,
            log_samples=True,
            bootstrap_iters=0,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except FileNotFoundError as exc:
        raise PosttrainError(
            f"lm-eval could not find a file for model {spec.label!r}: {exc}. lm-eval resolves "
            "`data_files` in a task YAML against the current folder: run from the folder they "
            "are relative to, or make them absolute"
        ) from None


def _leaves(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    if name not in group_subtasks:
        return [name]
    out: list[str] = []
    for child in group_subtasks[name]:
        out += _leaves(child, group_subtasks)
    return out


def _pick(sample: dict, metric: str | None) -> str:
    names = list(sample.get("metrics") or [])
    if metric:
        if metric not in names:
            raise PosttrainError(
                f"--metric {metric!r} is not reported by this task; it has {names}"
            )
        return metric
    for m in PREFERRED_METRICS:
        if m in names:
            return m
    if not names:
        raise PosttrainError("an lm-eval sample reports no metric; check the task's metric_list")
    return names[0]


def items_table(results: dict, label: str, metric: str | None = None) -> pd.DataFrame:
    """Per-item values of one lm-eval run: model, task, doc_id, metric, value (one filter per task:
    the first the task lists)."""
    rows = []
    for task, samples in results["samples"].items():
        if not samples:
            continue
        filt = samples[0].get("filter", "none")
        name = _pick(samples[0], metric)
        for s in samples:
            if s.get("filter", "none") != filt:
                continue
            rows.append((label, task, int(s["doc_id"]), f"{name},{filt}", float(s[name])))
    return pd.DataFrame(rows, columns=["model", "task", "doc_id", "metric", "value"])


def paired_difference(x: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Difference of means of paired item values x − b with its SE, normal interval and test."""
    from scipy import stats

    x, b = np.asarray(x, float), np.asarray(b, float)
    d = x - b
    n = len(d)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    z = stats.norm.ppf(0.5 + level / 2)
    binary = bool(np.isin(x, (0.0, 1.0)).all() and np.isin(b, (0.0, 1.0)).all())
    better, worse = int((d > 0).sum()), int((d < 0).sum())
    if binary:
        test = "mcnemar-exact"
        k = better + worse
        p = float(stats.binomtest(min(better, worse), k, 0.5).pvalue) if k else 1.0
    else:
        test = "paired-t"
        p = float(stats.ttest_rel(x, b).pvalue) if n > 1 and se > 0 else np.nan
    mean = float(d.mean()) if n else np.nan
    return {
        "diff": mean,
        "diff_se": se,
        "diff_lo": mean - z * se,
        "diff_hi": mean + z * se,
        "test": test,
        "p_value": p,
        "n_better": better,
        "n_worse": worse,
    }


def summarize_items(
    items: pd.DataFrame, rows_of: dict[str, tuple[str, list[str]]], base: str
) -> pd.DataFrame:
    """The utility table from per-item values. ``rows_of`` maps a row name to (kind, leaf tasks)."""
    out = []
    base_items = items[items["model"] == base]
    for model in items["model"].unique():
        mine = items[items["model"] == model]
        for name, (kind, leaves) in rows_of.items():
            sel = mine[mine["task"].isin(leaves)]
            if sel.empty:
                continue
            vals = sel["value"].to_numpy(float)
            n = len(vals)
            row = {
                "model": model,
                "task": name,
                "kind": kind,
                "metric": ";".join(sorted(sel["metric"].unique())),
                "n_items": n,
                "accuracy": vals.mean(),
                "accuracy_se": vals.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                "base": base,
            }
            ref = base_items[base_items["task"].isin(leaves)]
            pair = sel.merge(ref, on=["task", "doc_id"], suffixes=("", "_base"))
            row.update(paired_difference(pair["value"], pair["value_base"]))
            out.append(row)
    return pd.DataFrame(out, columns=UTILITY_COLUMNS)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def utility(
    models: list[str] | list[ModelSpec],
    tasks: list[str],
    out: str | Path | None = None,
    *,
    base: str | None = None,
    include_path: list[str] | None = None,
    limit: float | None = None,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    seed: int = 1234,
    batch_size: int | str = 8,
    device: str | None = None,
    dtype: str = "auto",
    metric: str | None = None,
) -> pd.DataFrame:
    """Run lm-eval with the same settings on every model; write ``out/utility.csv``,
    ``out/utility_items.csv`` and ``out/lm_eval/<model>.json``. ``base`` (a label) defaults to
    the first model."""
    specs = parse_model_specs(list(models))
    if not specs or not tasks:
        raise PosttrainError("give at least one --model and one task in --tasks")
    base = base or specs[0].label
    if base not in {s.label for s in specs}:
        raise PosttrainError(f"--base {base!r} is not one of the --model labels")
    settings = {
        "num_fewshot": num_fewshot,
        "limit": limit,
        "batch_size": batch_size,
        "device": device,
        "apply_chat_template": apply_chat_template,
        "seed": seed,
        "dtype": dtype,
    }
    tm = task_manager(include_path, tasks)
    frames, groups = [], {}
    for spec in specs:
        res = _evaluate(spec, tasks, tm, settings)
        release_memory()  # lm-eval's model object is gone once it returns
        if res is None:  # lm-eval returns None on non-zero ranks
            continue
        groups.update(res.get("group_subtasks") or {})
        frames.append(items_table(res, spec.label, metric))
        if out is not None:
            keep = {k: v for k, v in res.items() if k not in ("samples", "pretty_env_info")}
            write_json(keep, Path(out) / "lm_eval" / f"{_safe(spec.label)}.json")
    items = pd.concat(frames, ignore_index=True)
    rows_of: dict[str, tuple[str, list[str]]] = {}
    for t in tasks:
        for leaf in _leaves(t, groups):
            rows_of.setdefault(leaf, ("task", [leaf]))
        if t in groups:
            rows_of[t] = ("group", _leaves(t, groups))
    table = summarize_items(items, rows_of, base)
    if out is not None:
        write_csv(items, Path(out) / "utility_items.csv")
        write_csv(table, Path(out) / "utility.csv")
    return table
