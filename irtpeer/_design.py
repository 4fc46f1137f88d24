"""From a validated ratings table to integer-coded designs, one per dimension.

Here the data-dependent parts of the specification are resolved: the categories of the scale
(taken from the data, unobserved middle categories reported), facets with a single element
(left out of that dimension's model with a note), the persons of response mode, and the check
that the design is connected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._errors import DesignError, RatingsError
from .ratings import Ratings, category_codes, describe_rows
from .spec import ModelSpec

__all__ = ["DimensionDesign", "FacetData", "build_designs", "check_connected"]


@dataclass
class FacetData:
    """Integer-coded observations of one dimension."""

    #: element index per observation, persons first, then each facet; in a signed type that
    #: holds the facet's parameter positions (often a view of the table's categorical codes)
    idx: list[np.ndarray]
    sizes: list[int]  # number of elements of each of those facets
    x: np.ndarray  # category 0..K
    K: int
    w: np.ndarray | None = None  # observation weights (None = all ones)
    pcm: int | None = None  # position in ``idx`` of the partial-credit facet, if any

    @property
    def n_tau(self) -> int:
        if self.K <= 1:
            return 0
        if self.pcm is None:
            return self.K
        return self.sizes[self.pcm] * self.K

    @property
    def offsets(self) -> list[int]:
        out, o = [], 0
        for s in self.sizes:
            out.append(o)
            o += s
        out.append(o)  # start of tau
        return out

    @property
    def n_params(self) -> int:
        return sum(self.sizes) + self.n_tau


@dataclass
class DimensionDesign:
    dimension: str
    scale: str  # "binary", "rsm" or "pcm"
    person_facet: str  # name used in the measures table for the person facet
    person_labels: np.ndarray
    person_model: np.ndarray  # model index of each person (identity in model mode)
    model_labels: np.ndarray
    facet_names: list[str]
    facet_labels: list[np.ndarray]
    categories: np.ndarray  # original score values, index = category 0..K
    data: FacetData
    judge_position: int | None  # position in facet_names of the judge facet, for Z-scores
    raw_scores: np.ndarray  # original score per observation
    notes: list[str] = field(default_factory=list)

    @property
    def K(self) -> int:
        return len(self.categories) - 1


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes and the labels (sorted, or a categorical's own order); unused categories are
    dropped. A categorical column's codes are used as they are, in their own integer type: a
    view of the table's column (no hashing of the labels, no copy)."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, cats = category_codes(values), values.cat.categories
    else:
        cat = pd.Categorical(values)
        codes, cats = cat.codes, cat.categories
    used = _used(codes, len(cats))
    if not used.all():
        codes = (np.cumsum(used) - 1).astype(codes.dtype)[codes]
        cats = cats[used]
    return codes, np.asarray(cats.astype(str))


def _used(codes: np.ndarray, n: int, step: int = 1 << 18, stride: int = 61) -> np.ndarray:
    """Which of the ``n`` codes occur. Usually all do, which every ``stride``-th code (or the
    first slices) already shows, so the scan stops there; otherwise every code is visited, in
    ``intp`` copies of short slices (numpy converts a narrower index array on every scatter,
    twice as slow; bincount would copy all the codes to int64 at once). 15 M ratings, four
    columns: 115 -> 6 ms."""
    used = np.zeros(n, dtype=bool)
    used[codes[::stride].astype(np.intp)] = True
    for s in range(0, len(codes), step):
        if used.all():
            break
        used[codes[s : s + step].astype(np.intp)] = True
    return used


def _index_types(idx: list[np.ndarray], sizes: list[int], pcm: int | None, n_cats: int):
    """The codes of every facet in a type that holds each of its parameter positions (offset +
    code; for the partial-credit facet also code x categories + category), so that no
    arithmetic on them can wrap around: the table's own narrow codes (views) wherever that
    holds, the next wider type (a copy) only where it does not."""
    out, end = [], 0
    for a, codes in enumerate(idx):
        end += sizes[a]
        top = max(end, sizes[a] * n_cats if a == pcm else 0) - 1
        if top > np.iinfo(codes.dtype).max:
            codes = codes.astype(next(t for t in (np.int16, np.int32, np.int64)
                                      if top <= np.iinfo(t).max))
        out.append(codes)
    return out


def _category_index(raw: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Category 0..K of every score, in the scores' own compact integer type (no int64 copy):
    the scores themselves when they are 0..K, a shift when the categories are consecutive."""
    small = np.int8 if len(cats) <= 127 else np.int32
    if np.array_equal(cats, np.arange(len(cats))):
        return raw
    if int(cats[-1]) - int(cats[0]) == len(cats) - 1:
        # wrap-around arithmetic in the small type is exact: every result lies in 0..K
        return np.subtract(raw, int(cats[0]), dtype=small, casting="unsafe")
    out = np.empty(len(raw), dtype=small)
    step = 1 << 24
    for s in range(0, len(raw), step):
        out[s : s + step] = np.searchsorted(cats, raw[s : s + step])
    return out


def _single_valued(col: pd.Series) -> bool:
    """True when every row holds the same value (a categorical's codes compared, no hashing)."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = category_codes(col)
        return len(codes) == 0 or codes.min() == codes.max()
    return col.nunique() < 2


def _distinct_scores(raw: np.ndarray) -> np.ndarray:
    """Sorted distinct scores; integers in a small range are counted instead of sorted, and
    two adjacent values (binary scores) need no count at all."""
    if len(raw) and raw.dtype.kind in "iu":
        lo, hi = int(raw.min()), int(raw.max())
        if hi - lo <= 1:
            return np.arange(lo, hi + 1).astype(raw.dtype)
        if lo >= 0 and hi < 1_000_000:
            return np.flatnonzero(np.bincount(raw)).astype(raw.dtype)
    return np.unique(raw)


def _counts(codes: np.ndarray, n: int, step: int = 1 << 22) -> np.ndarray:
    """``np.bincount(codes, minlength=n)`` a slice at a time (bincount copies narrow codes to
    int64 first: 8 bytes per observation at once)."""
    out = np.zeros(n, dtype=np.int64)
    for s in range(0, len(codes), step):
        out += np.bincount(codes[s : s + step], minlength=n)
    return out


def _reached_in_two_steps(idx: list[np.ndarray], sizes: list[int], hub: int) -> bool:
    """A quick sufficient test of connectivity, in a few passes over the observations: from the
    busiest element of the hub facet, its neighbours, the hub elements that share one of them,
    and all their neighbours. Densely crossed designs (leaderboards) are settled here; anything
    else goes to the exact component search."""
    start = _counts(idx[hub], sizes[hub]).argmax()
    first = idx[hub] == start
    marks = [np.zeros(s, dtype=bool) for s in sizes]
    for a in range(len(sizes)):
        if a != hub:
            marks[a][idx[a][first]] = True
    del first
    step = 1 << 24  # slices: the selected codes are copies
    for s in range(0, len(idx[hub]), step):
        touch = np.zeros(len(idx[hub][s : s + step]), dtype=bool)
        for a in range(len(sizes)):
            if a != hub:
                touch |= marks[a][idx[a][s : s + step]]
        marks[hub][idx[hub][s : s + step][touch]] = True
    for s in range(0, len(idx[hub]), step):
        touch = marks[hub][idx[hub][s : s + step]]
        for a in range(len(sizes)):
            if a != hub:
                marks[a][idx[a][s : s + step][touch]] = True
    return all(m.all() for m in marks)


def check_connected(dimension: str, names: list[str], labels: list[np.ndarray], idx: list[np.ndarray], sizes: list[int]):
    """Raise :class:`DesignError` naming the subsets if the elements do not form one network.

    Two elements are linked when they share an observation; every observation links all its
    elements, so a star around the smallest facet carries the same connectivity.
    """
    A = len(sizes)
    off = np.cumsum([0] + sizes)
    hub = int(np.argmin(sizes))
    # a subset of the observations has a subset of the links: if every 13th observation
    # already connects everything (a crossed leaderboard does), the whole design does (a prime
    # stride, so that it does not skip the same element of a facet every time). Tried whenever
    # the subset is large enough to hold every element (1.2 M crossed ratings: 44 -> 4 ms); a
    # miss costs a 13th of the full test
    stride = 13 if len(idx[0]) >= 13 * sum(sizes) else 1
    if stride > 1 and _reached_in_two_steps([i[::stride] for i in idx], sizes, hub):
        return
    if _reached_in_two_steps(idx, sizes, hub):
        return
    rows, cols = [], []
    for a in range(A):
        if a == hub:
            continue
        key = idx[hub].astype(np.int64) * sizes[a] + idx[a]
        if sizes[hub] * sizes[a] <= (1 << 26):
            nz = np.flatnonzero(np.bincount(key, minlength=sizes[hub] * sizes[a]))
        else:
            nz = np.unique(key)
        rows.append(nz // sizes[a] + off[hub])
        cols.append(nz % sizes[a] + off[a])
    n = int(off[-1])
    if not rows:
        return
    import scipy.sparse as sp  # only here: importing irtpeer needs no scipy
    from scipy.sparse.csgraph import connected_components

    r = np.concatenate(rows)
    c = np.concatenate(cols)
    G = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    ncomp, lab = connected_components(G, directed=False)
    if ncomp <= 1:
        return
    parts = []
    for comp in range(min(ncomp, 3)):
        members = np.flatnonzero(lab == comp)
        desc = []
        for a in range(A):
            m = members[(members >= off[a]) & (members < off[a + 1])] - off[a]
            if len(m):
                shown = ", ".join(labels[a][m[:3]])
                more = f" +{len(m) - 3} more" if len(m) > 3 else ""
                desc.append(f"{names[a]}: {shown}{more}")
        parts.append(f"subset {comp + 1} (" + "; ".join(desc) + ")")
    more = f"; ... and {ncomp - 3} more subsets" if ncomp > 3 else ""
    raise DesignError(
        f"the design of dimension {dimension!r} is disconnected into {ncomp} subsets whose "
        f"measures cannot be compared: {', '.join(parts)}{more}; link them (e.g. have some "
        f"judges rate across them) or calibrate each subset separately"
    )


def _check_categories(ratings: Ratings, dim: str, df: pd.DataFrame, raw: np.ndarray, cats):
    """In ``--scale auto``, refuse categories that look like stray values rather than a scale:
    a rare lowest or highest score outside the range of the rest (one -1 in 0/1 data would make a
    3-category rating scale), or a range mostly unobserved (0, 1, 99 would make 0..99)."""
    n = len(raw)
    hint = "or pass --score-range=MIN,MAX to declare the valid range and keep them"
    for end in (0, len(cats) - 1):
        rest = np.delete(cats, end)
        if len(rest) < 2:  # two categories (binary): nothing to count
            continue
        c = int(cats[end])
        k = int(np.count_nonzero(raw == c))  # only the two ends; 4x faster than a bool .sum()
        if k == 1 or k < 0.002 * n:
            pos = np.flatnonzero(raw == c)
            rows = ratings.file_rows(df.index.to_numpy()[pos])
            raise RatingsError(
                f"column {ratings.score!r}, dimension {dim!r}: the score {c} occurs in only {k} of "
                f"{n} judgments ({describe_rows(rows)}), outside the range {rest[0]}..{rest[-1]} "
                f"of the other scores; it would add a category to the scale and shift every "
                f"measure. Correct or empty it, {hint}"
            )
    span = int(cats[-1]) - int(cats[0]) + 1
    if span > 3 and len(cats) / span < 0.5:
        raise RatingsError(
            f"column {ratings.score!r}, dimension {dim!r}: the scores {', '.join(map(str, cats))} "
            f"leave {span - len(cats)} of the {span} categories between {cats[0]} and {cats[-1]} "
            f"unobserved; a stray value (e.g. 99 for 'missing') would stretch the scale. Correct "
            f"or empty the stray values, {hint}"
        )


def _check_spec(ratings: Ratings, spec: ModelSpec) -> None:
    """The facets the specification names (partial-credit, response) exist in the table."""
    if spec.scale == "pcm" and spec.pcm_facet not in ratings.facets:
        raise RatingsError(
            f"partial-credit facet {spec.pcm_facet!r} is not one of the facets "
            f"{', '.join(ratings.facets)}; name one of them, e.g. --scale pcm:{ratings.facets[-1]}"
        )
    if spec.person_mode == "response" and spec.response_facet not in ratings.facets:
        raise RatingsError(
            f"person mode 'response' needs the facet {spec.response_facet!r} to define a response "
            f"(model x {spec.response_facet}); facets are {', '.join(ratings.facets)}"
        )


def _facets_used(ratings: Ratings, df: pd.DataFrame, dim: str, notes: list[str]) -> list[str]:
    """The facets with more than one element in this dimension (the others noted, left out)."""
    used = []
    for f in ratings.facets:
        if _single_valued(df[f]):
            notes.append(
                f"facet {f!r} has a single element ({df[f].iloc[0]!r}) in dimension {dim!r}: "
                f"it carries no information and is left out of this dimension's model"
            )
            continue
        used.append(f)
    return used


def _persons(ratings: Ratings, spec: ModelSpec, df: pd.DataFrame, dim: str, facet_names):
    """Person codes and labels, the model labels, each person's model and the person facet's
    name (``response``: one person per model x response facet element)."""
    if spec.person_mode == "response":
        if spec.response_facet not in facet_names:
            raise DesignError(
                f"dimension {dim!r} has a single {spec.response_facet!r}; response mode "
                f"needs several"
            )
        m_codes, model_labels = _codes(df[ratings.person])
        resp = df[ratings.person].astype(str) + "|" + df[spec.response_facet].astype(str)
        p_codes, person_labels = _codes(resp)
        person_model = np.zeros(len(person_labels), dtype=np.int64)
        person_model[p_codes] = m_codes
        facet = "response"
    else:
        p_codes, person_labels = _codes(df[ratings.person])
        model_labels, person_model = person_labels, np.arange(len(person_labels))
        facet = ratings.person
    if len(person_labels) < 2:
        raise DesignError(
            f"dimension {dim!r} has a single {ratings.person!r} ({person_labels[0]!r}); "
            f"calibration needs at least two persons to compare"
        )
    return p_codes, person_labels, model_labels, person_model, facet


def _scale(ratings: Ratings, spec: ModelSpec, dim: str, df, raw, notes: list[str]):
    """The observed categories (sorted scores) and the scale they are fitted with."""
    cats = _distinct_scores(raw).astype(np.int64)
    if len(cats) < 2:
        raise RatingsError(
            f"every score in dimension {dim!r} is {cats[0]}: with a single category there is "
            f"nothing to calibrate"
        )
    gaps = sorted(set(range(int(cats[0]), int(cats[-1]) + 1)) - {int(c) for c in cats})
    scale = spec.scale
    if scale == "auto" and ratings.score_range is None:
        _check_categories(ratings, dim, df, raw, cats)
    if scale == "auto":
        scale = "binary" if len(cats) == 2 else "rsm"
    if scale == "binary" and len(cats) > 2:
        raise RatingsError(
            f"scale 'binary' but dimension {dim!r} has scores {', '.join(map(str, cats))} in "
            f"column {ratings.score!r}; use --scale rsm (or auto), or recode the scores to 0/1"
        )
    if scale in ("rsm", "pcm") and len(cats) == 2:
        notes.append(
            f"dimension {dim!r} has two categories: the rating-scale model reduces to the "
            f"dichotomous one"
        )
        scale = "binary"
    if gaps:
        notes.append(
            f"dimension {dim!r}: categories {', '.join(map(str, gaps))} between "
            f"{cats[0]} and {cats[-1]} are never observed; the scale uses the observed "
            f"categories {', '.join(map(str, cats))} as consecutive steps"
        )
    return cats, scale


def _design(ratings: Ratings, spec: ModelSpec, dim: str) -> DimensionDesign:
    """One dimension's design: its codes are views of the table's columns wherever they can be."""
    df = ratings.dimension_frame(dim)
    notes: list[str] = []
    facet_names = _facets_used(ratings, df, dim, notes)
    p_codes, person_labels, model_labels, person_model, person_facet = _persons(
        ratings, spec, df, dim, facet_names)
    idx, labels = [p_codes], [person_labels]
    for f in facet_names:
        c, lab = _codes(df[f])
        idx.append(c)
        labels.append(lab)
    sizes = [len(lab) for lab in labels]
    raw = df["_score"].to_numpy()
    cats, scale = _scale(ratings, spec, dim, df, raw, notes)
    w = ratings.weights(df)
    w = None if w is None or np.all(w == 1.0) else w
    check_connected(dim, [person_facet, *facet_names], labels, idx, sizes)
    pcm = None
    if scale == "pcm":
        if spec.pcm_facet not in facet_names:
            raise DesignError(
                f"partial-credit facet {spec.pcm_facet!r} has a single element in dimension "
                f"{dim!r}; use --scale rsm"
            )
        pcm = 1 + facet_names.index(spec.pcm_facet)
    idx = _index_types(idx, sizes, pcm, len(cats))
    data = FacetData(idx=idx, sizes=sizes, x=_category_index(raw, cats), K=len(cats) - 1, w=w,
                     pcm=pcm)
    return DimensionDesign(
        dimension=dim, scale=scale, person_facet=person_facet, person_labels=person_labels,
        person_model=person_model, model_labels=model_labels, facet_names=facet_names,
        facet_labels=labels[1:], categories=cats, data=data,
        judge_position=facet_names.index("judge") if "judge" in facet_names else None,
        raw_scores=raw, notes=notes,
    )


def build_designs(ratings: Ratings, spec: ModelSpec) -> list[DimensionDesign]:
    """Code every dimension of ``ratings`` for the estimator."""
    _check_spec(ratings, spec)
    return [_design(ratings, spec, dim) for dim in ratings.dimensions]
