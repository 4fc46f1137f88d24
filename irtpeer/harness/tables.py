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
]


def read_table(path: str | os.PathLike, what: str = "input") -> pd.DataFrame:
    """Read a parquet, CSV or JSON-lines table (by file extension); empty CSV cells stay ``""``."""
    return _io.read_table(path, what, error=ConfigError, empty_as_missing=False)


def require_columns(df: pd.DataFrame, cols: list[str], what: str, path: Any = "") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{what} {str(path)!r} lacks the column(s) {missing} (it has {list(df.columns)}); "
            f"it needs {cols}"
        )


atomic_write_bytes = _io.atomic_write_bytes
atomic_write_parquet = _io.atomic_write_parquet
atomic_write_json = _io.atomic_write_json
