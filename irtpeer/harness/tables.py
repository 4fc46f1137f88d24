"""Reading input tables and writing output tables atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "read_table",
    "require_columns",
]


def read_table(path: str | os.PathLike, what: str = "input") -> pd.DataFrame:
    """Read a parquet, CSV or JSON-lines table (by file extension)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist; check the path")
    ext = p.suffix.lower()
    try:
        if ext == ".parquet":
            return pd.read_parquet(p)
        if ext == ".csv":
            return pd.read_csv(p, keep_default_na=False, dtype=str)
        if ext in (".jsonl", ".ndjson"):
            return pd.read_json(p, lines=True, dtype=False)
        if ext == ".json":
            return pd.read_json(p, dtype=False)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes a message naming the file
        raise ConfigError(f"cannot read {what} file {str(p)!r}: {exc}") from None
    raise ConfigError(
        f"{what} file {str(p)!r}: unknown extension {ext!r}; use .parquet, .csv, .jsonl or .json"
    )


def require_columns(df: pd.DataFrame, cols: list[str], what: str, path: Any = "") -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{what} {str(path)!r} lacks the column(s) {missing} (it has {list(df.columns)}); "
            f"it needs {cols}"
        )


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync it, then ``os.replace`` it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass


def atomic_write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> None:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_json(obj: Any, path: str | os.PathLike) -> None:
    atomic_write_bytes(
        path, (json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")
    )
