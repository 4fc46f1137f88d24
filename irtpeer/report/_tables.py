"""Tables of the report: formatted cells, misfit classes, long tables collapsed to the extremes.

A table is a plain dict the template renders (every cell is text, escaped by Jinja2):
``{"caption", "columns": [{"name", "num"}], "rows": [{"cells", "cls"}], "more", "note"}``.
Long tables show their first and last ``head`` rows; the full table follows in a ``<details>``
element (open on demand, no script) when it has at most ``limit`` rows, else a note says where
the full table is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd


def fmt(v, digits: int | None = 2) -> str:
    """A cell as text: numbers rounded to ``digits`` (``None``: as integer), missing as ''."""
    if v is None:
        return ""
    if isinstance(v, (bool,)):
        return "yes" if v else "no"
    if isinstance(v, (int, float)) or hasattr(v, "dtype"):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        if math.isnan(f):
            return ""
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        if digits is None:
            return f"{f:.0f}"
        text = f"{f:.{digits}f}"
        if text.startswith("-") and float(text) == 0:
            text = text[1:]
        return text.replace("-", "−")
    return str(v)


@dataclass
class Col:
    """One column: the frame column, its header, digits (``None`` = integer, ``-1`` = text)."""

    key: str
    name: str | None = None
    digits: int | None = 2
    title: str = ""

    @property
    def numeric(self) -> bool:
        return self.digits != -1


@dataclass
class TableSpec:
    cols: list[Col]
    caption: str = ""
    head: int = 10
    limit: int = 1000
    full_hint: str = "the full table is in measures.csv (irtpeer score PATH --out DIR)"
    row_class: str | None = None  # a frame column holding each row's CSS class
    extra: dict = field(default_factory=dict)


def _rows(df: pd.DataFrame, spec: TableSpec) -> list[dict]:
    out = []
    for rec in df.to_dict(orient="records"):
        cells = [
            str(rec.get(c.key, "")) if c.digits == -1 else fmt(rec.get(c.key), c.digits)
            for c in spec.cols
        ]
        cls = str(rec.get(spec.row_class) or "") if spec.row_class else ""
        out.append({"cells": cells, "cls": cls})
    return out


def make_table(df: pd.DataFrame, spec: TableSpec) -> dict:
    """The template's table; ``df`` in display order (e.g. highest measure first)."""
    cols = [c for c in spec.cols if c.key in df.columns]
    spec = TableSpec(**{**spec.__dict__, "cols": cols})
    columns = [{"name": c.name or c.key, "num": c.numeric, "title": c.title} for c in cols]
    n = len(df)
    table = {"caption": spec.caption, "columns": columns, "more": None, "note": "", "n": n}
    if n <= 2 * spec.head + 4:
        table["rows"] = _rows(df, spec)
        return table
    top = _rows(df.head(spec.head), spec)
    bottom = _rows(df.tail(spec.head), spec)
    gap = {"cells": [f"… {n - 2 * spec.head} rows between …"], "cls": "gap",
           "span": len(cols)}
    table["rows"] = top + [gap] + bottom
    if n <= spec.limit:
        table["more"] = {"label": f"Show all {n} rows", "rows": _rows(df, spec)}
    else:
        table["note"] = f"{n} rows: only the extremes are shown here; {spec.full_hint}."
    return table
