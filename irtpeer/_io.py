"""The one place that reads input tables and writes output files.

* :func:`read_table` reads parquet, CSV/TSV and JSON(-lines) tables by file extension. In a CSV
  only an empty cell is missing: ``NA``, ``null``, ``None`` and ``nan`` are names like any other
  (a model called ``None`` is a model), and every column comes in as text, so ``001`` stays
  ``001``. Numeric columns are converted by whoever needs numbers.
* ``atomic_write_*`` write to a temporary file in the target folder, fsync it and rename it into
  place, so an interrupted run never leaves a partial file that looks complete.

Every stage of the pipeline (ratings, harness, analyses, report, CLI) uses these.
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._errors import IrtpeerError

__all__ = [
    "TABLE_SUFFIXES",
    "atomic_write_bytes",
    "atomic_write_csv",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "json_default",
    "parse_settings",
    "read_table",
]

#: File extensions :func:`read_table` understands.
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".txt", ".tsv", ".jsonl", ".ndjson", ".json")


def read_table(
    path: str | os.PathLike,
    what: str = "input",
    *,
    error: type[IrtpeerError] = IrtpeerError,
    empty_as_missing: bool = True,
    categorical: tuple[str, ...] | list[str] = (),
) -> pd.DataFrame:
    """Read a table by extension; raise ``error`` naming ``what`` and the file when it cannot.

    In CSV/TSV files every column is read as text and only an empty cell is missing (``NaN``
    when ``empty_as_missing``, else the empty string). The text columns of a parquet file named
    in ``categorical`` come in as categoricals (integer codes and one copy of each label), read
    column by column without a second copy of the table (see :func:`_read_parquet`).
    """
    p = Path(path)
    if not p.exists():
        raise error(f"{what} file not found: {str(p)!r}; check the path")
    if p.is_dir():
        raise error(f"{what} path {str(p)!r} is a folder; give the path of a table file")
    ext = p.suffix.lower()
    na = {"keep_default_na": False, "na_values": [""] if empty_as_missing else []}
    try:
        if ext in (".parquet", ".pq"):
            return _read_parquet(p, categorical)
        if ext in (".csv", ".txt"):
            return pd.read_csv(p, dtype=str, **na)
        if ext == ".tsv":
            return pd.read_csv(p, sep="\t", dtype=str, **na)
        if ext in (".jsonl", ".ndjson"):
            return pd.read_json(p, lines=True, dtype=False)
        if ext == ".json":
            return pd.read_json(p, dtype=False)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes a message naming the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"could not read {what} file {str(p)!r} as {ext[1:]}: {first}") from None
    raise error(
        f"unknown {what} file type {ext!r} for {str(p)!r}: use "
        f"{', '.join(s for s in TABLE_SUFFIXES if s not in ('.pq', '.txt', '.ndjson'))}"
    )


def _read_parquet(path: Path, categorical=()) -> pd.DataFrame:
    """A parquet file as a DataFrame, text columns in ``categorical`` as categoricals.

    A file of several row groups whose columns are all labels (dictionary-encoded text) or plain
    numbers without nulls (a leaderboard's responses) is read a row group at a time into the
    final arrays (:func:`_read_row_groups`): the peak is the table plus one row group. Otherwise
    Arrow's buffers are released column by column as pandas takes them over
    (``self_destruct``), so the peak is about one copy of the table, not two, and the freed
    memory goes back to the system. Columns a pandas writer stored as categoricals stay so.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    text = [f.name for f in schema if f.name in set(categorical)
            and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))]
    if categorical:  # the ratings loader: labels and scores
        df = _read_row_groups(pq.ParquetFile(path, read_dictionary=text or None))
        if df is not None:
            return df
    table = pq.read_table(path, read_dictionary=text or None)
    try:
        df = table.to_pandas(self_destruct=True, split_blocks=True, types_mapper=_types_mapper())
    finally:
        del table
        pa.default_memory_pool().release_unused()
    return df


def _row_group_columns(pf) -> dict | None:
    """Per column, ``True`` for labels (dictionary of text) or its numpy dtype (numbers, bools),
    when every column is one of those and pandas metadata asks for no index; else ``None``."""
    import pyarrow as pa

    schema = pf.schema_arrow
    meta = schema.pandas_metadata or {}
    if pf.metadata.num_row_groups < 2 or any(
        isinstance(c, str) for c in meta.get("index_columns", [])
    ):
        return None
    kinds = {}
    for f in schema:
        t = f.type
        if pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type)
                                          or pa.types.is_large_string(t.value_type)):
            kinds[f.name] = True
        elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
            kinds[f.name] = np.dtype(t.to_pandas_dtype())
        else:
            return None
    return kinds


def _read_row_groups(pf) -> pd.DataFrame | None:
    """The file read a row group at a time into arrays of the final size: labels as
    categorical codes (dictionaries unified in order of first appearance, the smallest code
    type), numbers in their own type. ``None`` (read the whole table instead) when a column
    does not suit (:func:`_row_group_columns`) or holds a null."""
    import pyarrow as pa

    kinds = _row_group_columns(pf)
    if kinds is None:
        return None
    n = pf.metadata.num_rows
    out = {name: None if k is True else np.empty(n, dtype=k) for name, k in kinds.items()}
    labels = {name: _Labels() for name, k in kinds.items() if k is True}
    s = 0
    for g in range(pf.metadata.num_row_groups):
        table = pf.read_row_group(g)
        for name in kinds:
            col = table.column(name)
            if col.null_count or name in labels and any(c.dictionary.null_count for c in col.chunks):
                return None
            at = s
            for chunk in col.chunks:
                if name in labels:
                    out[name] = labels[name].add(out[name], chunk, at, at + len(chunk), n)
                else:
                    out[name][at : at + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
                at += len(chunk)
        s += table.num_rows
        del table
    pa.default_memory_pool().release_unused()
    df = pd.DataFrame(index=pd.RangeIndex(n))
    for name in kinds:
        arr = out.pop(name)
        if name in labels:
            arr = labels[name].categorical(arr)
        df[name] = pd.Series(arr, index=df.index, copy=False)  # df[c] = array would copy
    return df


class _Labels:
    """The categories of a label column read in row groups, and the codes of each chunk."""

    def __init__(self):
        self.index = pd.Index([], dtype=object)
        self.last = None  # the previous chunk's dictionary and its codes' mapping
        self.map, self.identity = None, False

    def add(self, codes, chunk, s: int, e: int, n: int) -> np.ndarray:
        """Write ``chunk``'s codes into ``codes[s:e]`` (allocated, or widened when the
        categories outgrow its type) and return ``codes``."""
        d = chunk.dictionary
        if self.last is None or not d.equals(self.last):
            values = pd.Index(d.to_pylist(), dtype=object)
            new = values[~values.isin(self.index)].unique()
            self.index = self.index.append(new) if len(new) else self.index
            self.map = self.index.get_indexer(values).astype(np.int64)
            self.identity = np.array_equal(self.map, np.arange(len(self.map)))
            self.last = d
        kind = _code_type(len(self.index))
        if codes is None or codes.dtype.itemsize < np.dtype(kind).itemsize:
            codes = np.empty(n, dtype=kind) if codes is None else codes.astype(kind)
        ix = chunk.indices.to_numpy(zero_copy_only=False)
        codes[s:e] = ix if self.identity else self.map[ix]
        return codes

    def categorical(self, codes: np.ndarray) -> pd.Categorical:
        cats = pd.Index(self.index, dtype=pd.Series(["a"]).dtype)  # str as pandas reads it
        return pd.Categorical.from_codes(codes, categories=cats, validate=False)


def _code_type(n_categories: int):
    """The code type pandas gives a categorical of that many categories."""
    for t in (np.int8, np.int16, np.int32):
        if n_categories < np.iinfo(t).max:
            return t
    return np.int64


def _types_mapper():
    """The string dtype ``pd.read_parquet`` gives text columns in this pandas (``str`` in 3.x)."""
    import pyarrow as pa

    if pd.api.types.is_object_dtype(pd.Series(["a"]).dtype):
        return None
    dtype = pd.Series(["a"]).dtype
    return {pa.string(): dtype, pa.large_string(): dtype}.get


def parse_settings(text: str, suffix: str, where: str, *, error: type[IrtpeerError] = IrtpeerError):
    """Parse a TOML, YAML or JSON settings text (``suffix`` without the dot); a parser's error
    becomes one ``error`` line naming ``where``. Other suffixes return ``None``."""
    suffix = suffix.lower().lstrip(".")
    try:
        if suffix == "toml":
            import tomllib

            return tomllib.loads(text)
        if suffix in ("yaml", "yml"):
            import yaml

            return yaml.safe_load(text)
        if suffix == "json":
            return json.loads(text)
    except Exception as exc:  # noqa: BLE001 - parse errors of three libraries, reported to the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"cannot parse {where}: {first}") from None
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file in the same folder, fsync it, then ``os.replace`` it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes private files; keep the usual permissions
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
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, df.to_csv(index=False))


def atomic_write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return atomic_write_bytes(path, buf.getvalue())


def json_default(o: Any):
    """``json.dumps`` default: numpy scalars and arrays as Python values, NaN/inf as null."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=json_default) + "\n"
    return atomic_write_text(path, text)
