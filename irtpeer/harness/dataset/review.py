"""Human review: ``DIR/review.csv`` and ``DIR/review.html`` out, ``irtpeer dataset accept DIR
REVIEWED.csv`` in, and the training file ``DIR/personaknob.jsonl`` that ``lagdpo train --data``
reads (test split in ``DIR/personaknob_test.jsonl``, split by seed scene so that no scene is on
both sides).

The texts of the training file come from ``DIR/instances.jsonl`` (what the build produced and the
verifier passed); the reviewed CSV contributes only its decisions (``accept`` / ``reject`` marks and
``comment``), matched by ``instance_id`` — an accidental edit of a text cell in a spreadsheet cannot
leak into the training data.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ... import _io
from ..errors import ConfigError
from .spec import LAGDPO_DIMENSIONS

__all__ = ["accept_review", "export_review", "read_instances", "split_by_scene", "write_instances"]

REVIEW_COLUMNS = [
    "instance_id",
    "portion",
    "mask",
    "task_format",
    "source_category",
    "seed_scene",
    "context",
    "trigger",
    "prompt",
    "reference",
    *(f"reject_{d}" for d in LAGDPO_DIMENSIONS),
    "verifier",
    "regenerations",
    "accept",
    "reject",
    "comment",
]
_NO = {"", "0", "no", "n", "false", "f"}


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, default=_io.json_default) + "\n" for r in rows)


def write_instances(instances, out: Path) -> Path:
    return _io.atomic_write_text(out / "instances.jsonl", _jsonl([i.record() for i in instances]))


def read_instances(out: Path) -> list[dict[str, Any]]:
    p = Path(out) / "instances.jsonl"
    if not p.is_file():
        raise ConfigError(
            f"{str(out)!r} has no instances.jsonl; run `irtpeer dataset build CONFIG --out "
            f"{out}` first"
        )
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _verifier_note(r: dict) -> str:
    regen = {k: v for k, v in r["regenerations"].items() if v}
    if not regen:
        return "all checks passed"
    return "all checks passed after regenerating: " + ", ".join(
        f"{k} x{v}" for k, v in regen.items()
    )


def _review_rows(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        if r["status"] != "verified":
            continue
        row = {
            "instance_id": r["id"],
            "portion": r["portion"],
            "mask": ",".join(r["mask"]),
            "task_format": r["task_format"],
            "source_category": r["source_category"],
            "seed_scene": r["seed_scene"],
            "context": r["context"],
            "trigger": r["trigger"],
            "prompt": r["prompt"],
            "reference": r["reference"],
            **{f"reject_{d}": (r["negatives"].get(d) or "") for d in LAGDPO_DIMENSIONS},
            "verifier": _verifier_note(r),
            "regenerations": sum(r["regenerations"].values()),
            "accept": "",
            "reject": "",
            "comment": "",
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=REVIEW_COLUMNS)


def export_review(instances, cfg, out: Path) -> dict[str, Path]:
    """``review.csv`` (one row per verified instance, empty accept/reject/comment) and
    ``review.html`` (the same, readable, with buttons that download the reviewed CSV)."""
    records = [i.record() for i in instances]
    df = _carry_marks(_review_rows(records), out / "review.csv")
    names = {d.id: f"{d.name} (fails: {d.failure_mode})" for d in cfg.dimensions.values()}
    return {
        "review_csv": _io.atomic_write_csv(df, out / "review.csv"),
        "review_html": _io.atomic_write_text(out / "review.html", review_html(df, names)),
    }


_DECISION = ["accept", "reject", "comment"]
_CONTENT = [c for c in REVIEW_COLUMNS if c not in ("verifier", "regenerations", *_DECISION)]


def _carry_marks(df: pd.DataFrame, previous: Path) -> pd.DataFrame:
    """Keep the marks a reviewer already put into ``previous`` (an earlier export of this folder)
    for every instance whose texts did not change, so a rerun of the build never erases them."""
    if not previous.is_file() or df.empty:
        return df
    try:
        old = _io.read_table(previous, "review file", empty_as_missing=False)
    except Exception:  # noqa: BLE001 - an unreadable old export has no marks to keep
        return df
    if not set(_CONTENT + _DECISION) <= set(old.columns):
        return df
    old = old.drop_duplicates("instance_id").set_index("instance_id")
    for i, row in df.iterrows():
        iid = row["instance_id"]
        if iid in old.index and all(str(old.at[iid, c]) == str(row[c]) for c in _CONTENT[1:]):
            for c in _DECISION:
                df.at[i, c] = old.at[iid, c]
    return df


def review_html(df: pd.DataFrame, dim_names: dict[str, str]) -> str:
    from .html import PAGE

    data = json.dumps(
        {"rows": df.fillna("").astype(str).to_dict("records"), "dims": dim_names},
        ensure_ascii=False,
    ).replace("</", "<\\/")
    return PAGE.replace("__DATA__", data)


def _mark(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return str(value).strip().lower() not in _NO


def _decisions(reviewed: pd.DataFrame, verified: set[str], path) -> dict[str, tuple[str, str]]:
    from ..tables import require_columns

    require_columns(reviewed, ["instance_id", "accept", "reject"], "reviewed file", path)
    out: dict[str, tuple[str, str]] = {}
    has_comment = "comment" in reviewed.columns
    for i, row in enumerate(reviewed.to_dict("records")):
        iid = str(row["instance_id"])
        where = f"reviewed file {str(path)!r} row {i + 2}"  # +2: header line, 1-based
        if iid not in verified:
            raise ConfigError(
                f"{where}: instance_id {iid!r} is not a verified instance of this build; "
                "review the review.csv of the same folder"
            )
        if iid in out:
            raise ConfigError(f"{where}: instance_id {iid!r} appears twice; keep one row")
        acc, rej = _mark(row["accept"]), _mark(row["reject"])
        if acc and rej:
            raise ConfigError(
                f"{where}: instance {iid!r} is marked both accept ({row['accept']!r}) and reject "
                f"({row['reject']!r}); keep one mark"
            )
        comment = str(row["comment"] or "") if has_comment and _mark(row["comment"]) else ""
        out[iid] = ("accept" if acc else "reject" if rej else "unreviewed", comment)
    return out


def split_by_scene(records: list[dict], test_fraction: float, seed: int) -> dict[str, str]:
    """``id -> "train" | "test"``: whole seed scenes go to test (in a seeded order) until the test
    share reaches ``test_fraction``; train is never left empty."""
    groups: dict[str, list[str]] = {}
    for r in records:
        key = " ".join(str(r["seed_scene"]).lower().split())
        groups.setdefault(key, []).append(r["id"])
    order = sorted(groups, key=lambda k: hashlib.sha256(f"{seed}|{k}".encode()).hexdigest())
    target = round(test_fraction * len(records))
    split = {iid: "train" for r in records for iid in [r["id"]]}
    n_test = 0
    for key in order:
        ids = groups[key]
        if n_test >= target or n_test + len(ids) >= len(records):
            continue
        for iid in ids:
            split[iid] = "test"
        n_test += len(ids)
    return split


def _training_record(r: dict, split: str, comment: str) -> dict[str, Any]:
    return {
        "id": r["id"],
        "mask": list(r["mask"]),
        "prompt": r["prompt"],
        "golden": r["reference"],
        **{f"reject_{d}": (r["negatives"].get(d) or "") for d in LAGDPO_DIMENSIONS},
        "seed_scene": r["seed_scene"],
        "context": r["context"],
        "trigger": r["trigger"],
        "task_format": r["task_format"],
        "source_category": r["source_category"],
        "portion": r["portion"],
        "split": split,
        "review_comment": comment,
    }


def accept_review(
    out: str | Path,
    reviewed: str | Path,
    *,
    test_fraction: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Write ``personaknob.jsonl`` (train) and ``personaknob_test.jsonl`` from the accepted rows."""
    from ..tables import read_table

    out = Path(out)
    records = read_instances(out)
    settings = {}
    mpath = out / "manifest.json"
    if mpath.is_file():
        settings = json.loads(mpath.read_text(encoding="utf-8")).get("settings", {})
    tf = settings.get("test_fraction", 0.15) if test_fraction is None else test_fraction
    if not 0 <= tf < 1:
        raise ConfigError(f"--test-fraction must be in [0, 1), got {tf}")
    seed = settings.get("seed", 0) if seed is None else seed
    verified = {r["id"]: r for r in records if r["status"] == "verified"}
    decisions = _decisions(read_table(reviewed, "reviewed file"), set(verified), reviewed)
    accepted = [verified[i] for i, (d, _) in decisions.items() if d == "accept"]
    if not accepted:
        raise ConfigError(
            f"no instance is accepted in {str(reviewed)!r}; put a mark (x, 1, yes) in the `accept` "
            "column of the rows to keep"
        )
    accepted.sort(key=lambda r: r["id"])
    split = split_by_scene(accepted, tf, seed)
    rows = [_training_record(r, split[r["id"]], decisions[r["id"]][1]) for r in accepted]
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    files = {"train": str(_io.atomic_write_text(out / "personaknob.jsonl", _jsonl(train)))}
    test_path = out / "personaknob_test.jsonl"
    if test:
        files["test"] = str(_io.atomic_write_text(test_path, _jsonl(test)))
    elif test_path.exists():  # a test split of an earlier accept would no longer match
        test_path.unlink()
    counts = {
        k: sum(d == k for d, _ in decisions.values()) for k in ("accept", "reject", "unreviewed")
    }
    reviewed_n = counts["accept"] + counts["reject"]
    summary = {
        "reviewed_file": str(reviewed),
        "verified_instances": len(verified),
        "not_in_reviewed_file": len(verified) - len(decisions),
        "accepted": counts["accept"],
        "rejected": counts["reject"],
        "unreviewed": counts["unreviewed"],
        "human_pass_rate": round(counts["accept"] / reviewed_n, 4) if reviewed_n else None,
        "train": len(train),
        "test": len(test),
        "test_fraction": tf,
        "seed": seed,
        "seed_scenes": {
            "train": len({r["seed_scene"] for r in train}),
            "test": len({r["seed_scene"] for r in test}),
        },
        "files": files,
    }
    _io.atomic_write_json(summary, out / "review_summary.json")
    return summary
