"""Run metadata: the input file and its SHA-256, row counts, settings, versions, time."""

from __future__ import annotations

import hashlib
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ._sections import Section
from ._tables import Col, TableSpec, make_table

_PACKAGES = ("irtpeer", "numpy", "pandas", "scipy", "torch", "pymc", "arviz", "matplotlib",
             "jinja2")


def sha256(path: str) -> str:
    """Hex SHA-256 of a file ('' when ``path`` is not a file, e.g. a DataFrame)."""
    p = Path(path)
    if not p.is_file():
        return ""
    h = hashlib.sha256()
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        if name in ("torch", "pymc", "arviz") and name not in sys.modules:
            continue  # only what this run used
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_facts(cal, ratings) -> dict:
    ds = cal.data_summary
    src = str(cal.source)
    return {
        "input": src,
        "sha256": sha256(src),
        "rows_read": ds.get("rows_read"),
        "rows_used": ds.get("rows_used"),
        "null_scores": ds.get("null_scores", 0),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def metadata_section(cal, ratings, facts: dict) -> list[Section]:
    sec = Section("Run metadata", id="metadata")
    rows = [
        ("input file", facts["input"]),
        ("input SHA-256", facts["sha256"] or "(not a file)"),
        ("rows read", facts["rows_read"]),
        ("judgments used", facts["rows_used"]),
        ("scores left out as missing", facts["null_scores"]),
        ("duplicated judgments", "{} (policy: {})".format(
            cal.data_summary.get("duplicated_rows", 0), cal.data_summary.get("duplicates", "error"))),
        ("person facet", cal.person),
        ("other facets", ", ".join(cal.meta.get("facets", []))),
        ("dimension column", cal.meta.get("dimension_column") or "(none: one dimension)"),
        ("score column", cal.meta.get("score_column", "")),
        ("scales", ", ".join(f"{d}: {s}" for d, s in cal.meta.get("scales", {}).items())),
        ("person mode", cal.spec.person_mode),
        ("estimator", cal.estimator),
        *[(f"option {k}", v) for k, v in cal.options.items()],
        ("fit time", f"{cal.seconds:.2f} s"),
        ("report generated", facts["generated"]),
        *[(f"version {k}", v) for k, v in versions().items()],
    ]
    import pandas as pd

    df = pd.DataFrame([(k, "" if v is None else str(v)) for k, v in rows],
                      columns=["what", "value"])
    sec.table(make_table(df, TableSpec([Col("what", "", -1), Col("value", "", -1)],
                                       head=10_000)))
    if cal.notes:
        sec.heading("Notes from the fit")
        for n in cal.notes:
            sec.text(n)
    return [sec]
