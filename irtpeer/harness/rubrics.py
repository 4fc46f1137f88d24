"""Rubrics as data: loading, hashing, prompt rendering and strict validation of judge replies.

A rubric file (TOML, YAML or JSON) holds::

    id = "persona"                  # goes into every rating row (rubric_id)
    version = "1"                   # bump when the wording changes (rubric_version)
    scale = { min = 0, max = 1 }    # binary; e.g. { min = 1, max = 5 } for a Likert item
    system = "..."                  # optional system message of the judge
    template = "... {prompt} ... {answer} ... {items} {instruction}"   # user message
    instruction = "Return STRICT JSON with exactly {n_keys} keys: {keys}. ..."
    [[dimensions]]
    id = "A"; name = "..."; question = "..."; template = "..." (optional, overrides the rubric's)
    items = [ { id = "A1", text = "..." }, ... ]

Template placeholders: ``{items}`` (one "ID: text" line per item), ``{instruction}``, ``{keys}``,
``{n_keys}``, ``{scale_text}``, ``{dimension_id}``, ``{dimension_name}``, ``{dimension_question}``,
and any column of the input row (``{prompt}``, ``{answer}``, ``{scenario}``, ...).

The content hash is the SHA-256 of the canonical JSON of the parsed rubric, so the same rubric
written in TOML or YAML, with other comments or spacing, has the same hash.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import parse_settings
from .errors import RubricError

__all__ = ["Dimension", "Item", "Rubric", "builtin_rubrics", "load_rubric", "validate_reply"]

_DEFAULT_INSTRUCTION = (
    "Return STRICT JSON with exactly {n_keys} keys: {keys}. Each value must be {scale_text}. "
    "Do not output anything else."
)
_DEFAULT_TEMPLATE = (
    "[{dimension_id} — {dimension_name}] {dimension_question}\n\n"
    "The user's message and the assistant's reply are provided below.\nInput:\n"
    "user: {prompt}\nassistant: {answer}\n\n"
    "Score each rubric item:\n{items}\n{instruction}"
)
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass(frozen=True)
class Item:
    id: str
    text: str


@dataclass(frozen=True)
class Dimension:
    id: str
    name: str
    question: str
    items: tuple[Item, ...]
    template: str

    @property
    def keys(self) -> list[str]:
        return [it.id for it in self.items]


@dataclass(frozen=True)
class Rubric:
    id: str
    version: str
    scale_min: int
    scale_max: int
    system: str | None
    instruction: str
    dimensions: tuple[Dimension, ...]
    description: str = ""
    source: str = ""
    hash: str = field(default="", compare=False)

    # ---- lookups -----------------------------------------------------------------------------
    @property
    def dimension_ids(self) -> list[str]:
        return [d.id for d in self.dimensions]

    def dimension(self, dim_id: str) -> Dimension:
        for d in self.dimensions:
            if d.id == dim_id:
                return d
        raise RubricError(
            f"dimension {dim_id!r} is not in rubric {self.id!r} (it has {', '.join(self.dimension_ids)}); "
            "fix the `dimensions` column of the input or pick another rubric"
        )

    @property
    def binary(self) -> bool:
        return (self.scale_min, self.scale_max) == (0, 1)

    @property
    def scale_text(self) -> str:
        if self.binary:
            return "0 or 1"
        return f"an integer from {self.scale_min} to {self.scale_max}"

    # ---- prompts -----------------------------------------------------------------------------
    def instruction_for(self, dim: Dimension) -> str:
        keys = dim.keys
        return self.instruction.format(
            n_keys=_NUMBER_WORDS.get(len(keys), str(len(keys))),
            keys=", ".join(keys),
            scale_text=self.scale_text,
        )

    def messages(self, dim: Dimension, row: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages that ask a judge to score ``row`` on dimension ``dim``."""
        fields = {
            "items": "\n".join(f"{it.id}: {it.text}" for it in dim.items),
            "instruction": self.instruction_for(dim),
            "keys": ", ".join(dim.keys),
            "n_keys": str(len(dim.keys)),
            "scale_text": self.scale_text,
            "dimension_id": dim.id,
            "dimension_name": dim.name,
            "dimension_question": dim.question,
        }
        try:
            user = dim.template.format_map(_RowFields(row, fields))
        except _MissingField as exc:
            raise RubricError(
                f"rubric {self.id!r} dimension {dim.id!r} needs the input column {exc.name!r} "
                f"(placeholder {{{exc.name}}}), which the input table lacks; add that column or "
                "use a rubric whose template matches your table"
            ) from None
        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": user})
        return msgs

    def reask_message(self, dim: Dimension, reason: str) -> dict[str, str]:
        """The follow-up user message sent once after an invalid reply."""
        return {
            "role": "user",
            "content": f"Your reply could not be used ({reason}). {self.instruction_for(dim)}",
        }

    def json_schema(self, dim: Dimension) -> dict[str, Any]:
        """JSON schema of a valid reply for ``dim`` (used for structured output)."""
        prop = {"type": "integer", "minimum": self.scale_min, "maximum": self.scale_max}
        if self.binary:
            prop = {"type": "integer", "enum": [0, 1]}
        return {
            "type": "object",
            "properties": {k: dict(prop) for k in dim.keys},
            "required": dim.keys,
            "additionalProperties": False,
        }

    def to_dict(self) -> dict[str, Any]:
        return _canonical(self)


class _MissingField(KeyError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _RowFields(dict):
    """format_map source: rubric fields first, then the input row; missing names raise."""

    def __init__(self, row: Mapping[str, Any], fields: Mapping[str, str]):
        super().__init__()
        self._row = row
        self._fields = fields

    def __missing__(self, key: str) -> str:
        if key in self._fields:
            return self._fields[key]
        try:
            value = self._row[key]
        except (KeyError, IndexError):
            raise _MissingField(key) from None
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        return "" if value is None else str(value)


def _canonical(r: Rubric) -> dict[str, Any]:
    return {
        "id": r.id,
        "version": r.version,
        "scale": {"min": r.scale_min, "max": r.scale_max},
        "system": r.system,
        "instruction": r.instruction,
        "dimensions": [
            {
                "id": d.id,
                "name": d.name,
                "question": d.question,
                "template": d.template,
                "items": [{"id": it.id, "text": it.text} for it in d.items],
            }
            for d in r.dimensions
        ],
    }


def _placeholders(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise RubricError(
            f"template {template[:60]!r}... is not a valid format string: {exc}"
        ) from None


def rubric_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Rubric:
    """Build and check a :class:`Rubric` from parsed file content."""

    def need(mapping: Mapping[str, Any], key: str, where: str):
        if key not in mapping or mapping[key] in (None, ""):
            raise RubricError(f"{source}: {where} lacks the required key {key!r}")
        return mapping[key]

    rid = str(need(data, "id", "the rubric"))
    version = str(need(data, "version", "the rubric"))
    scale = data.get("scale", {"min": 0, "max": 1})
    try:
        smin, smax = int(scale["min"]), int(scale["max"])
    except (KeyError, TypeError, ValueError):
        raise RubricError(
            f"{source}: `scale` must be a table with integer `min` and `max`, got {scale!r}"
        ) from None
    if smax <= smin:
        raise RubricError(f"{source}: scale max ({smax}) must be greater than min ({smin})")
    instruction = str(data.get("instruction") or _DEFAULT_INSTRUCTION)
    base_template = str(data.get("template") or _DEFAULT_TEMPLATE)
    dims_raw = need(data, "dimensions", "the rubric")
    if not isinstance(dims_raw, list) or not dims_raw:
        raise RubricError(f"{source}: `dimensions` must be a non-empty list")
    dims, seen_dims, seen_items = [], set(), set()
    for i, d in enumerate(dims_raw):
        where = f"dimension #{i + 1}"
        did = str(need(d, "id", where))
        if did in seen_dims:
            raise RubricError(f"{source}: dimension id {did!r} appears twice; ids must be unique")
        seen_dims.add(did)
        items_raw = need(d, "items", f"dimension {did!r}")
        items = []
        for it in items_raw:
            iid = str(need(it, "id", f"an item of dimension {did!r}"))
            if iid in seen_items:
                raise RubricError(
                    f"{source}: item id {iid!r} appears twice; item ids must be unique"
                )
            seen_items.add(iid)
            items.append(Item(iid, str(need(it, "text", f"item {iid!r}"))))
        template = str(d.get("template") or base_template)
        if "items" not in _placeholders(template) and "instruction" not in _placeholders(template):
            raise RubricError(
                f"{source}: the template of dimension {did!r} has neither {{items}} nor {{instruction}}; "
                "the judge would not know what to score"
            )
        dims.append(
            Dimension(
                did, str(d.get("name", did)), str(d.get("question", "")), tuple(items), template
            )
        )
    system = data.get("system")
    r = Rubric(
        id=rid,
        version=version,
        scale_min=smin,
        scale_max=smax,
        system=str(system) if system else None,
        instruction=instruction,
        dimensions=tuple(dims),
        description=str(data.get("description", "")),
        source=source,
    )
    digest = hashlib.sha256(
        json.dumps(
            _canonical(r), sort_keys=True, ensure_ascii=False, separators=(",", ":")
        ).encode()
    ).hexdigest()
    object.__setattr__(r, "hash", digest)
    return r


def _builtin_dir():
    import importlib.resources

    try:
        return importlib.resources.files("irtpeer.rubrics")
    except ModuleNotFoundError:
        # source checkout / editable install where the package-dir mapping is not active
        return Path(__file__).resolve().parents[2] / "rubrics"


def builtin_rubrics() -> list[str]:
    """Names of the built-in rubrics (``persona``, ``audit``, ...)."""
    names = []
    for entry in _builtin_dir().iterdir():
        stem, _, ext = entry.name.rpartition(".")
        if ext in ("toml", "yaml", "yml", "json") and stem:
            names.append(stem)
    return sorted(names)


def _parse(text: str, suffix: str, source: str) -> Mapping[str, Any]:
    return parse_settings(text, suffix, f"{source}: the rubric file", error=RubricError)


def load_rubric(name_or_path: str | Path, *, option: str = "--rubric") -> Rubric:
    """Load a built-in rubric by name (``"persona"``, ``"audit"``) or a user rubric from a path.

    ``option`` names where the value came from (``--rubric``, or a config file's key) in the
    error raised when it is neither."""
    p = Path(name_or_path)
    if p.is_file():
        return rubric_from_dict(
            _parse(p.read_text(encoding="utf-8"), p.suffix.lstrip(".").lower(), str(p)), str(p)
        )
    base = _builtin_dir()
    for ext in ("toml", "yaml", "yml", "json"):
        entry = base / f"{name_or_path}.{ext}"
        if entry.is_file():
            return rubric_from_dict(
                _parse(entry.read_text(encoding="utf-8"), ext, f"builtin:{name_or_path}"),
                f"builtin:{name_or_path}",
            )
    raise RubricError(
        f"{option} = {str(name_or_path)!r} is neither a file nor a built-in rubric "
        f"(built-in: {', '.join(builtin_rubrics())}); pass a path to a .toml/.yaml/.json rubric"
    )


def parse_json_object(raw: str | None, finish_reason: str | None, keys: list[str]):
    """``(object, None)`` when ``raw`` is a JSON object (a surrounding Markdown code fence is
    tolerated) with exactly ``keys``, else ``(None, reason)``. A truncated reply is never valid."""
    if raw is None or not raw.strip():
        return None, "empty reply"
    if finish_reason == "length":
        return None, "reply truncated (finish_reason=length); the JSON is incomplete"
    text = raw.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"not valid JSON ({getattr(exc, 'msg', exc)})"
    if not isinstance(obj, dict):
        return None, f"JSON is a {type(obj).__name__}, not an object"
    missing = [k for k in keys if k not in obj]
    extra = [k for k in obj if k not in keys]
    if missing or extra:
        parts = ([f"missing keys {missing}"] if missing else []) + (
            [f"unexpected keys {extra}"] if extra else []
        )
        return None, "; ".join(parts)
    return obj, None


def validate_reply(
    rubric: Rubric, dim: Dimension, raw: str | None, finish_reason: str | None = None
):
    """Check a judge reply strictly.

    Returns ``(scores, None)`` with ``scores`` a dict item id -> int when the reply is valid, or
    ``(None, reason)``. Valid means: a JSON object (a surrounding Markdown code fence is tolerated)
    with exactly the dimension's item ids as keys, each an integer on the rubric's scale (JSON
    booleans and strings are rejected; 1.0 counts as 1). A truncated reply is never valid.
    """
    obj, reason = parse_json_object(raw, finish_reason, dim.keys)
    if obj is None:
        return None, reason
    want = dim.keys
    scores = {}
    for k in want:
        v = obj[k]
        if (
            isinstance(v, bool)
            or not isinstance(v, (int, float))
            or (isinstance(v, float) and not v.is_integer())
        ):
            return None, f"value of {k} is {v!r}, not an integer"
        v = int(v)
        if not rubric.scale_min <= v <= rubric.scale_max:
            return None, f"value of {k} is {v}, outside {rubric.scale_min}..{rubric.scale_max}"
        scores[k] = v
    return scores, None
