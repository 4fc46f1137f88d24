"""The harness's view of :mod:`irtpeer._io`: input tables with :class:`ConfigError`, atomic writes."""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from .. import _io
from .errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "read_table",
    "require_columns",
    "table_name",
]


def read_table(path: str | os.PathLike, what: str = "input") -> pd.DataFrame:
    """Read a parquet, CSV or JSON-lines table (by file extension); empty CSV cells stay ``""``.
    The file name is kept in ``df.attrs["source"]`` for later error messages."""
    df = _io.read_table(path, what, error=ConfigError, empty_as_missing=False)
    df.attrs["source"] = str(path)
    return df


def table_name(df: pd.DataFrame, what: str, path: Any = None) -> str:
    """``what 'file.csv'`` for a table read from a file, plain ``what`` for one built in memory."""
    src = path if path not in (None, "") else df.attrs.get("source")
    return f"{what} {str(src)!r}" if src not in (None, "") else what


def require_columns(df: pd.DataFrame, cols: list[str], what: str, path: Any = None) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{table_name(df, what, path)} lacks the column(s) {missing} "
            f"(it has {list(df.columns)}); it needs {cols}"
        )


atomic_write_bytes = _io.atomic_write_bytes
atomic_write_parquet = _io.atomic_write_parquet
atomic_write_json = _io.atomic_write_json
