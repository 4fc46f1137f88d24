"""The ratings table: loading, column mapping and validation (DESIGN §2).

One row per judgment in long format. Column names map to facets through arguments, so any
FACETS-style data fits (``person="junior", facets=["senior", "trait"], score="rating"``).
Null scores are missing data, never zeros: they are dropped and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import _io
from ._errors import RatingsError

__all__ = ["DEFAULT_FACETS", "Ratings", "load_ratings", "read_table"]

#: Facet columns used when none are named, in this order, if present.
DEFAULT_FACETS = ("question", "judge", "item")

_DUPLICATE_POLICIES = ("error", "keep", "mean")

#: Text that means "no score" in a score column (only there: in a name column only "" is missing).
_SCORE_NA_TOKENS = ("na", "n/a", "nan", "null", "none", "<na>")


def describe_rows(idx, limit: int = 5) -> str:
    """Describe data rows by 1-based number (the header is not counted)."""
    idx = list(idx)
    shown = ", ".join(str(int(i) + 1) for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return f"data row{'s' if len(idx) > 1 else ''} {shown}{more}"


def category_codes(col: pd.Series) -> np.ndarray:
    """The integer codes of a categorical column, read-only, without a copy (pandas'
    ``col.cat.codes.to_numpy()`` copies them: a few bytes per judgment each time)."""
    return col.array.codes


def read_table(path: str | os.PathLike, categorical=()) -> pd.DataFrame:
    """Read a parquet or CSV/TSV ratings file; in a CSV only an empty cell is missing. Text
    columns of a parquet file named in ``categorical`` are read as categoricals."""
    return _io.read_table(path, "ratings", error=RatingsError, categorical=categorical)


@dataclass
class Ratings:
    """A validated ratings table and how its columns map to the model.

    ``data`` holds the person, facet and dimension columns under their original names, the score
    as integers in ``_score`` in place of the score column (the smallest integer type that holds
    them: int8 for 0/1; one score column in memory) and,
    only when duplicated judgments were averaged, an observation weight in ``_weight`` (read it
    with :meth:`weights`: ``None`` means every weight is 1). Extra columns are kept.
    """

    data: pd.DataFrame
    person: str
    facets: list[str]
    dimension: str | None
    score: str
    source: str = "<DataFrame>"
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: 0-based data row (in the file) of each row of ``data``; ``None`` when they are the same
    rows: np.ndarray | None = None
    #: the ``score_range`` the user declared, if any
    score_range: tuple[int, int] | None = None

    def weights(self, frame: pd.DataFrame | None = None) -> np.ndarray | None:
        """Observation weights (float64) of ``frame`` (default: all of ``data``), or ``None``
        when every weight is 1 (no ``_weight`` column: nothing per judgment in memory)."""
        frame = self.data if frame is None else frame
        if "_weight" not in frame.columns:
            return None
        return frame["_weight"].to_numpy(dtype=np.float64)

    def file_rows(self, positions) -> np.ndarray:
        """Data rows in the file of rows ``positions`` of ``data`` (for messages)."""
        positions = np.asarray(positions, dtype=np.int64)
        return positions if self.rows is None else self.rows[positions]

    @property
    def dimensions(self) -> list[str]:
        if self.dimension is None:
            return ["all"]
        col = self.data[self.dimension]
        if isinstance(col.dtype, pd.CategoricalDtype):  # used categories, without a string per row
            used = np.zeros(len(col.cat.categories), dtype=bool)
            used[category_codes(col)] = True  # bincount would copy the codes to int64
            return sorted({str(c) for c in col.cat.categories[used]})
        return sorted(col.astype(str).unique())

    def dimension_frame(self, dim: str) -> pd.DataFrame:
        if self.dimension is None:
            return self.data
        col = self.data[self.dimension]
        if isinstance(col.dtype, pd.CategoricalDtype):
            match = np.flatnonzero(col.cat.categories.astype(str) == dim)
            mask = np.isin(category_codes(col), match)
        else:
            mask = (col.astype(str) == dim).to_numpy()
        return self.data if mask.all() else self.data[mask]

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        return (
            f"Ratings({len(self.data)} judgments from {self.source}; person={self.person!r}, "
            f"facets={self.facets}, dimension={self.dimension!r}, score={self.score!r})"
        )


def compact_int(values: np.ndarray) -> np.ndarray:
    """``values`` in the smallest signed integer type that holds them (int8 for 0/1 scores):
    one byte per judgment instead of eight. No copy when the type is already that small."""
    if len(values) == 0:
        return values.astype(np.int8)
    lo, hi = int(values.min()), int(values.max())
    for t in (np.int8, np.int16, np.int32):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            if values.dtype.kind == "i" and values.dtype.itemsize <= np.dtype(t).itemsize:
                return values
            return values.astype(t)
    return values.astype(np.int64, copy=False)


def _coerce_scores(values: pd.Series, column: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Return (integer scores in a compact type, null mask or ``None`` when there is no null);
    raise on anything that is not an integer."""
    s = values
    if isinstance(s.dtype, np.dtype) and s.dtype.kind in "iu":
        # plain integers (a parquet int8 column of 100 M scores): no nulls, nothing to convert
        return compact_int(s.to_numpy()), None
    if not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        # a score (not a name) written as NA/null/None/nan by R or pandas is a missing judgment
        text = s.astype("string").str.strip()
        s = s.mask(text.str.lower().isin(_SCORE_NA_TOKENS).fillna(False) | (text == ""))
    if pd.api.types.is_bool_dtype(s):
        s = s.astype("Int64")
    null = s.isna().to_numpy()
    if not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
        num = pd.to_numeric(s, errors="coerce")
        bad = (~null) & num.isna().to_numpy()
        if bad.any():
            idx = np.flatnonzero(bad)
            examples = ", ".join(repr(v) for v in pd.unique(s.iloc[idx[:50]]))[:200]
            raise RatingsError(
                f"column {column!r} has {bad.sum()} non-numeric score(s) ({examples}) in "
                f"{describe_rows(idx)}; scores must be integers, with an empty cell for no judgment"
            )
        s = num
    f = s.to_numpy(dtype=np.float64, na_value=np.nan)
    null = np.isnan(f)
    frac = (~null) & (np.abs(f - np.round(f)) > 1e-9)
    if frac.any():
        idx = np.flatnonzero(frac)
        examples = ", ".join(f"{v:g}" for v in pd.unique(f[idx[:50]]))[:200]
        raise RatingsError(
            f"column {column!r} has {frac.sum()} non-integer score(s) ({examples}) in "
            f"{describe_rows(idx)}; round them to integers (or use a rounded column such as "
            f"`--score score_rounded`), or leave the cell empty for no judgment"
        )
    inf = (~null) & ~np.isfinite(f)
    if inf.any():
        raise RatingsError(f"column {column!r} has infinite scores in {describe_rows(np.flatnonzero(inf))}")
    out = np.zeros(len(f), dtype=np.int64)
    out[~null] = np.round(f[~null]).astype(np.int64)
    return compact_int(out), (null if null.any() else None)


def _as_labels(col: pd.Series) -> pd.Series:
    """Element labels as strings; categoricals stay categorical (cheap on millions of rows)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        cats = col.cat.categories
        text = pd.api.types.is_string_dtype(cats.dtype) and not pd.api.types.is_object_dtype(cats)
        if not text and not all(isinstance(c, str) for c in cats):
            col = col.cat.rename_categories([str(c) for c in cats])
        return col
    if pd.api.types.is_string_dtype(col.dtype) and not pd.api.types.is_object_dtype(col.dtype):
        return col
    return col.astype(str)


#: Key combinations up to this many are checked for duplicates with a bitmap (one byte each).
_BITMAP_KEYS = 1 << 30


def _key_codes(col: pd.Series) -> tuple[np.ndarray, int]:
    """Integer codes of a key column and their count (a categorical's own codes: no hashing)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return category_codes(col), max(len(col.cat.categories), 1)
    codes, uniques = pd.factorize(col, sort=False)
    return codes, max(len(uniques), 1)


def _no_duplicates(df: pd.DataFrame, key: list[str], step: int = 1 << 18) -> bool:
    """True when every key occurs once, settled with a bitmap of the possible keys (one byte
    each) and the key built slice by slice (no per-row int64 array); False when unsure. The
    keys are ``intp`` (numpy converts any other index type on every scatter) in slices that
    stay in the CPU cache."""
    cols = [_key_codes(df[c]) for c in key]
    span = int(np.prod([float(n) for _, n in cols]))
    if span > _BITMAP_KEYS:
        return False
    seen = np.zeros(span, dtype=bool)
    for s in range(0, len(df), step):
        k = cols[0][0][s : s + step].astype(np.intp)
        for codes, n in cols[1:]:
            k *= n
            k += codes[s : s + step]
        seen[k] = True
    return int(np.count_nonzero(seen)) == len(df)


def _duplicates(df: pd.DataFrame, key: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Mask of rows whose key occurs more than once, and a group id per row (integer codes;
    None when there are no duplicates).

    The common case, no duplicates, is settled without hashing (:func:`_no_duplicates`).
    """
    if _no_duplicates(df, key):
        return np.zeros(len(df), dtype=bool), None
    combined = np.zeros(len(df), dtype=np.int64)
    span = 1
    for c in key:
        codes, n = _key_codes(df[c])
        if span * n >= (1 << 62):
            # too many combinations for one integer: compress what we have so far
            combined, _ = pd.factorize(combined, sort=False)
            combined = combined.astype(np.int64)
            span = int(combined.max()) + 1 if len(combined) else 1
        combined *= n
        combined += codes
        span *= n
    group, uniq = pd.factorize(combined, sort=False)
    counts = np.bincount(group, minlength=len(uniq))
    return counts[group] > 1, group


def _column_roles(columns, person, facets, dimension, score, src):
    """The facet list, the dimension column (None when the default one is absent) and the label
    columns in use, after checking that each named column exists and has one role."""
    if isinstance(facets, str):
        facets = [f.strip() for f in facets.split(",") if f.strip()]
    dim_explicit = dimension is not None and dimension != "dimension"
    if dimension is not None and dimension not in columns:
        if dim_explicit:
            raise RatingsError(
                f"dimension column {dimension!r} not found in {src}; available columns: "
                f"{', '.join(columns)}"
            )
        dimension = None
    missing = [c for c in [person, score] if c not in columns]
    if facets is None:
        facets = [c for c in DEFAULT_FACETS if c in columns and c != person]
        if not facets:
            raise RatingsError(
                f"none of the default facet columns ({', '.join(DEFAULT_FACETS)}) is in {src}; "
                f"name them with --facets COL,COL (available columns: {', '.join(columns)})"
            )
    else:
        facets = list(facets)
        missing += [c for c in facets if c not in columns]
    if missing:
        raise RatingsError(
            f"column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} not found in "
            f"{src}; available columns: {', '.join(columns)}. Map your columns with --person, "
            f"--facets and --score"
        )
    used = [person, *facets] + ([dimension] if dimension else [])
    if len(set(used)) != len(used) or score in used:
        raise RatingsError(
            f"a column is used twice among person={person!r}, facets={facets}, "
            f"dimension={dimension!r}, score={score!r}; each role needs its own column"
        )
    return facets, dimension, used


def _check_score_range(values, null, score_range, score) -> None:
    """Scores outside ``score_range`` (missing ones aside): one error naming them and their rows."""
    lo, hi = int(score_range[0]), int(score_range[1])
    out = (values < lo) | (values > hi)
    if null is not None:
        out &= ~null
    if out.any():
        idx = np.flatnonzero(out)
        vals = ", ".join(str(v) for v in sorted(pd.unique(values[out]))[:10])
        raise RatingsError(
            f"column {score!r} has {out.sum()} score(s) outside the range {lo}..{hi} "
            f"(values {vals}) in {describe_rows(idx)}; correct them, set them empty (no judgment), "
            f"or change the range"
        )


def _apply_duplicates(df, key, duplicates, notes) -> int:
    """Duplicated judgments (the same label in every ``key`` column) under the policy: an error,
    averaged (a ``_weight`` of 1/n each) or kept; returns how many rows are duplicates."""
    dup, group = _duplicates(df, key)
    n_dup = int(dup.sum())
    if n_dup:
        first = np.flatnonzero(dup)[0]
        example = ", ".join(f"{c}={df[c].iloc[first]!r}" for c in key)
        n_groups = len(np.unique(group[dup]))
        if duplicates == "error":
            raise RatingsError(
                f"{n_dup} rows are duplicated judgments ({n_groups} person × facet combinations "
                f"judged more than once, e.g. {example}); pass --duplicates keep to treat them "
                f"as independent judgments or --duplicates mean to average them"
            )
        if duplicates == "mean":
            sizes = np.bincount(group)
            df["_weight"] = 1.0 / sizes[group]
            notes.append(
                f"{n_dup} duplicated judgments in {n_groups} combinations were averaged "
                f"(each weighted 1/n)"
            )
        else:
            notes.append(
                f"{n_dup} duplicated judgments in {n_groups} combinations were kept as "
                f"independent observations"
            )
    return n_dup


def _with_scores(df: pd.DataFrame, score: str, values: np.ndarray, keep) -> pd.DataFrame:
    """The table with the integer scores ``values`` as ``_score`` in place of the score column
    (one score column in memory, not the file's beside the integers), the rows in ``keep``
    only, numbered from 0. ``values`` is taken without a copy (often the file's own int8
    column); no weight column: every weight is 1 unless duplicates are averaged later."""
    df = df.drop(columns=[score])
    if keep is not None:
        df = df.loc[keep]
    df = df.reset_index(drop=True)
    df["_score"] = pd.Series(values, index=df.index, copy=False)  # df[c] = array would copy
    return df


def load_ratings(
    source,
    *,
    person: str = "model",
    facets: list[str] | tuple[str, ...] | str | None = None,
    dimension: str | None = "dimension",
    score: str = "score",
    duplicates: str = "error",
    score_range: tuple[int, int] | None = None,
) -> Ratings:
    """Load and validate a ratings table.

    Parameters
    ----------
    source
        A path to a ``.parquet``/``.csv``/``.tsv`` file, or a DataFrame.
    person
        The column holding the person facet (the one that floats), by default ``model``.
    facets
        The other facet columns (a list or a comma-separated string). By default those of
        ``question``, ``judge`` and ``item`` that are present.
    dimension
        The column that splits the data into separately calibrated dimensions. The default,
        ``dimension``, is used only when present; ``None`` means one dimension called ``all``.
    score
        The integer score column. Null scores are missing judgments: dropped and counted.
    duplicates
        What to do with two or more judgments of the same person by the same facet elements in the
        same dimension: ``"error"`` (default) stops with a report, ``"keep"`` treats them as
        independent observations, ``"mean"`` gives each of them weight ``1/n`` (their average
        log-likelihood enters the fit).
    score_range
        ``(lowest, highest)`` valid score; values outside it are an error. By default any
        integers are accepted (categories are taken from the data).
    """
    if isinstance(source, pd.DataFrame):
        df = source.copy(deep=False)  # copy-on-write: the caller's frame is never modified
        src = "<DataFrame>"
    else:
        src = str(source)
        names = facets.split(",") if isinstance(facets, str) else (facets or DEFAULT_FACETS)
        # the label columns as integer codes (a few bytes per judgment, not a string each)
        df = read_table(source, categorical=[person, dimension, *[str(f).strip() for f in names]])
    if duplicates not in _DUPLICATE_POLICIES:
        raise RatingsError(
            f"duplicates={duplicates!r} is not one of {', '.join(_DUPLICATE_POLICIES)}"
        )
    if len(df) == 0:
        raise RatingsError(f"the ratings table {src} has no rows; nothing to calibrate")

    columns = [str(c) for c in df.columns]
    df.columns = columns
    facets, dimension, used = _column_roles(columns, person, facets, dimension, score, src)

    n_read = len(df)
    for col in used:
        nulls = df[col].isna().to_numpy()
        if nulls.any():
            raise RatingsError(
                f"column {col!r} is empty in {nulls.sum()} of {n_read} rows ({describe_rows(np.flatnonzero(nulls))}); "
                f"every judgment needs its {col}: fill them in or drop those rows"
            )
        column = df[col]
        labels = _as_labels(column)
        if labels is not column:  # setting a column copies it: only when its labels changed
            df[col] = labels
        del column, labels

    values, null = _coerce_scores(df[score], score)
    if score_range is not None:
        _check_score_range(values, null, score_range, score)
    kept_rows = None
    n_null = 0 if null is None else int(null.sum())
    if n_null:
        kept_rows = np.flatnonzero(~null)
        values = compact_int(values[~null])
    df = _with_scores(df, score, values, None if kept_rows is None else ~null)
    del null, values
    if len(df) == 0:
        raise RatingsError(
            f"all {n_read} scores in column {score!r} of {src} are empty; nothing to calibrate"
        )

    notes: list[str] = []
    if n_null:
        notes.append(f"{n_null} of {n_read} judgments have no score and were left out as missing")

    n_dup = _apply_duplicates(df, used, duplicates, notes)

    summary = {
        "rows_read": n_read,
        "null_scores": n_null,
        "duplicated_rows": n_dup,
        "duplicates": duplicates,
        "rows_used": len(df),
    }
    return Ratings(
        data=df,
        person=person,
        facets=facets,
        dimension=dimension,
        score=score,
        source=src,
        summary=summary,
        notes=notes,
        rows=kept_rows,
        score_range=None if score_range is None else (int(score_range[0]), int(score_range[1])),
    )
