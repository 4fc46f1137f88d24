"""What a dataset build is made of: the config file, the dimension definitions, the stage prompts
and the anchoring examples — loaded and checked before any call is made, so a bad input costs
nothing and is reported in one line that names the key, the value and what to do."""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..._io import parse_settings
from ..backend import Sampling
from ..errors import ConfigError

__all__ = [
    "BuildConfig",
    "DimensionDef",
    "Portion",
    "Prompts",
    "load_build_config",
    "load_dimensions",
    "load_prompts",
]

LAGDPO_DIMENSIONS = ("A", "T", "E", "C")  # the letters lagdpo trains on, in its order
DEFAULT_SOURCES = (
    "health",
    "work and career",
    "education",
    "relationships and family",
    "money",
    "science and technology",
    "creative projects",
    "daily life",
)
DEFAULT_SAMPLING = Sampling(temperature=0.7, top_p=1.0, max_tokens=1024)
DEFAULT_VERIFIER_SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_tokens=64)
_KEYS = {
    "seed",
    "out",
    "dimensions",
    "prompts",
    "verifier_rubric",
    "anchors",
    "demos",
    "max_regenerations",
    "test_fraction",
    "task_formats",
    "sources",
    "sampling",
    "verifier_sampling",
    "reask",
    "portions",
    "generators",
    "verifier",
    "length_tokenizer",
}
_PROMPT_KEYS = ("system", "brainstorm", "attribution", "reference", "negative", "feedback", "demo")


@dataclass(frozen=True)
class DimensionDef:
    id: str
    name: str
    failure_mode: str
    desired_behavior: str
    definition: str

    def line(self) -> str:
        return (
            f"- {self.id} ({self.name}): {self.definition} Failure mode: {self.failure_mode}. "
            f"Desired behaviour: {self.desired_behavior}."
        )


@dataclass(frozen=True)
class Prompts:
    texts: dict[str, str]
    task_formats: dict[str, str]
    hash: str
    source: str

    def render(self, name: str, **fields: Any) -> str:
        try:
            return self.texts[name].format_map(fields)
        except KeyError as exc:
            raise ConfigError(
                f"prompts {self.source}: the {name!r} prompt uses the placeholder {{{exc.args[0]}}}, "
                f"which that stage does not fill (it fills {sorted(fields)}); remove it or write "
                "a literal brace as {{ }}"
            ) from None


@dataclass(frozen=True)
class Portion:
    name: str
    dims: tuple[str, ...]
    count: int


@dataclass
class BuildConfig:
    path: Path
    seed: int
    out: Path | None
    dimensions: dict[str, DimensionDef]
    dimensions_source: str
    prompts: Prompts
    verifier_rubric: Any
    anchors: pd.DataFrame
    demos: int
    max_regenerations: int
    test_fraction: float
    task_formats: tuple[str, ...]
    sources: tuple[str, ...]
    sampling: Sampling
    verifier_sampling: Sampling
    reask: bool
    portions: list[Portion]
    generators: list[dict[str, Any]]
    verifier: dict[str, Any]
    length_tokenizer: Any = None  # a transformers tokenizer for the length statistics, or None
    raw: dict[str, Any] = field(default_factory=dict)


def _builtin(name: str):
    import importlib.resources

    try:
        return importlib.resources.files("irtpeer.rubrics").joinpath("dataset").joinpath(name)
    except ModuleNotFoundError:  # pragma: no cover - source checkout without the package mapping
        return Path(__file__).resolve().parents[3] / "rubrics" / "dataset" / name


def _parse_file(text: str, suffix: str, where: str) -> Any:
    return parse_settings(text, suffix, where, error=ConfigError)


def _load_data(ref: str | Path, builtin_name: str, base: Path | None, what: str):
    """A built-in data file by name (``"personaknob"``) or a user file (relative to ``base``)."""
    p = Path(ref)
    if base is not None and not p.is_absolute():
        p = base / p
    if p.is_file():
        return _parse_file(
            p.read_text(encoding="utf-8"), p.suffix.lstrip(".").lower(), str(p)
        ), str(p)
    if str(ref) == "personaknob":
        entry = _builtin(builtin_name)
        return _parse_file(entry.read_text(encoding="utf-8"), "toml", f"builtin:{what}"), (
            f"builtin:{what}"
        )
    raise ConfigError(
        f"{what} {str(ref)!r} is neither a file nor the built-in 'personaknob'; give a path to a "
        ".toml/.yaml/.json file (relative to the config file) or 'personaknob'"
    )


def load_dimensions(ref: str | Path = "personaknob", base: Path | None = None):
    """Dimension definitions (appendix K by default) keyed by id, in the file's order."""
    data, src = _load_data(ref, "dimensions.toml", base, "dimensions")
    dims_raw = data.get("dimensions") if isinstance(data, Mapping) else None
    if not isinstance(dims_raw, list) or not dims_raw:
        raise ConfigError(f"dimensions {src}: needs a non-empty list `dimensions`")
    out: dict[str, DimensionDef] = {}
    for i, d in enumerate(dims_raw):
        keys = ("id", "name", "failure_mode", "desired_behavior", "definition")
        missing = [k for k in keys if not str((d or {}).get(k, "")).strip()]
        if missing:
            raise ConfigError(
                f"dimensions {src}: dimension #{i + 1} lacks {missing}; give {list(keys)}"
            )
        did = str(d["id"])
        if did not in LAGDPO_DIMENSIONS:
            raise ConfigError(
                f"dimensions {src}: dimension id {did!r} is not one of {list(LAGDPO_DIMENSIONS)}; "
                "the training file has columns reject_A..reject_C only, so name your dimension "
                "with one of those letters (its name and definition are yours)"
            )
        if did in out:
            raise ConfigError(f"dimensions {src}: dimension id {did!r} appears twice")
        out[did] = DimensionDef(*(str(d[k]) for k in keys))
    return out, src


def load_prompts(ref: str | Path = "personaknob", base: Path | None = None) -> Prompts:
    data, src = _load_data(ref, "prompts.toml", base, "prompts")
    if not isinstance(data, Mapping):
        raise ConfigError(f"prompts {src}: expected a table of prompts")
    missing = [k for k in _PROMPT_KEYS if not str(data.get(k, "")).strip()]
    if missing:
        raise ConfigError(f"prompts {src}: lacks the prompt(s) {missing}")
    texts = {k: str(v) for k, v in data.items() if isinstance(v, str)}
    texts.setdefault("demo_bad", "")
    for k, t in texts.items():
        try:
            list(string.Formatter().parse(t))
        except ValueError as exc:
            raise ConfigError(
                f"prompts {src}: the {k!r} prompt has a bad placeholder: {exc}"
            ) from None
    formats = {str(k): str(v) for k, v in (data.get("task_formats") or {}).items()}
    digest = hashlib.sha256(
        json.dumps({"texts": texts, "formats": formats}, sort_keys=True).encode()
    ).hexdigest()
    return Prompts(texts, formats, digest, src)


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in ("toml", "yaml", "yml"):
        raise ConfigError(f"config file {str(path)!r}: use a .toml, .yaml or .yml file")
    data = _parse_file(path.read_text(encoding="utf-8"), suffix, f"config file {str(path)!r}")
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a table of settings")
    unknown = set(data) - _KEYS
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown key(s) {sorted(unknown)}; known: {sorted(_KEYS)}"
        )
    return data


def _int(data: Mapping, key: str, default: int, lo: int, where: str) -> int:
    v = data.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{where}: `{key}` = {v!r}; give an integer >= {lo}")
    return v


def _portions(raw: Any, dims: dict[str, DimensionDef], where: str) -> list[Portion]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(
            f'{where}: needs `portions`, a list like [{{dimensions = ["A", "T"], count = 10}}]'
        )
    out, names = [], set()
    for i, p in enumerate(raw):
        w = f"{where}: portions[{i}]"
        if not isinstance(p, Mapping):
            raise ConfigError(f"{w} must be a table with `dimensions` and `count`")
        bad = set(p) - {"dimensions", "count", "name"}
        if bad:
            raise ConfigError(f"{w}: unknown key(s) {sorted(bad)}; use dimensions, count, name")
        d = p.get("dimensions")
        if isinstance(d, str):
            d = [t for t in d.replace(",", " ").split() if t]
        if not isinstance(d, list) or not d:
            raise ConfigError(f'{w}: `dimensions` = {d!r}; give a list like ["A", "T"]')
        unknown = [x for x in d if str(x) not in dims]
        if unknown:
            raise ConfigError(
                f"{w}: `dimensions` names {unknown}, which are not defined (defined: {list(dims)})"
            )
        active = tuple(x for x in dims if x in {str(y) for y in d})
        count = _int(p, "count", 0, 1, w)
        name = str(p.get("name") or "".join(active))
        if name in names:
            raise ConfigError(f"{w}: two portions are named {name!r}; give each a distinct `name`")
        names.add(name)
        out.append(Portion(name, active, count))
    return out


def _anchors(ref: Any, base: Path, dims: dict[str, DimensionDef], needed: set[str], demos: int):
    cols = ["dimension", "prompt", "response"]
    if ref is None:
        if demos > 0:
            raise ConfigError(
                "the config lacks `anchors`, the file of in-context demonstrations per dimension "
                "(columns dimension, prompt, response [, bad_response]); give one, or set demos = 0"
            )
        return pd.DataFrame(columns=cols)
    from ..tables import read_table, require_columns

    path = Path(ref) if Path(ref).is_absolute() else base / ref
    df = read_table(path, "anchors file")
    require_columns(df, cols, "anchors file", path)
    for i, row in enumerate(df.to_dict("records")):
        if str(row["dimension"]) not in dims:
            raise ConfigError(
                f"anchors file {str(path)!r} row {i}: dimension {row['dimension']!r} is not defined "
                f"(defined: {list(dims)})"
            )
        for c in ("prompt", "response"):
            if not str(row[c] if row[c] is not None else "").strip():
                raise ConfigError(f"anchors file {str(path)!r} row {i}: column {c!r} is empty")
    df = df.assign(dimension=df["dimension"].astype(str))
    lacking = sorted(d for d in needed if demos > 0 and not (df["dimension"] == d).any())
    if lacking:
        raise ConfigError(
            f"anchors file {str(path)!r} has no example for dimension(s) {lacking}, which a portion "
            "activates; add rows with those dimensions, or set demos = 0"
        )
    return df


def _str_list(data: Mapping, key: str, default, where: str) -> tuple[str, ...]:
    v = data.get(key, list(default))
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip() for x in v):
        raise ConfigError(f"{where}: `{key}` = {v!r}; give a non-empty list of strings")
    return tuple(v)


def _sampling(data: Mapping, key: str, default: Sampling, where: str) -> Sampling:
    raw = data.get(key) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: `{key}` must be a table like {{temperature = 0.7}}")
    if "seed" in raw:
        raise ConfigError(
            f"{where}: `{key}.seed` is not used; set the build's top-level `seed` (every call gets "
            "its own seed derived from it)"
        )
    return Sampling.from_dict({**default.to_dict(), **raw})


def _tokenizer(ref: Any, base: Path):
    """The tokenizer that counts reference and negative lengths (a local folder or a hub id)."""
    if ref is None:
        return None
    from ..._errors import require

    transformers = require("transformers", "local")
    p = Path(str(ref))
    p = p if p.is_absolute() else base / p
    try:
        return transformers.AutoTokenizer.from_pretrained(str(p) if p.exists() else str(ref))
    except Exception as exc:  # noqa: BLE001 - any loader error, reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"`length_tokenizer` = {ref!r} cannot be loaded ({first}); give a local tokenizer "
            "folder (relative to the config file) or leave the key out to count words"
        ) from None


def load_build_config(path: str | Path) -> BuildConfig:
    """Read and check a ``dataset build`` config (TOML or YAML); relative paths are relative to it."""
    from ..rubrics import load_rubric

    path = Path(path)
    data = _read_config_file(path)
    where = f"config file {str(path)!r}"
    base = path.resolve().parent
    dims, dims_src = load_dimensions(data.get("dimensions", "personaknob"), base)
    prompts = load_prompts(data.get("prompts", "personaknob"), base)
    portions = _portions(data.get("portions"), dims, where)
    demos = _int(data, "demos", 2, 0, where)
    needed = {d for p in portions for d in p.dims}
    formats = _str_list(data, "task_formats", ("selection", "generation"), where)
    undefined = [f for f in formats if f not in prompts.task_formats]
    if undefined:
        raise ConfigError(
            f"{where}: task format(s) {undefined} have no definition in prompts {prompts.source} "
            f"(defined: {sorted(prompts.task_formats)}); add them under [task_formats]"
        )
    gens = data.get("generators")
    if not isinstance(gens, list) or not gens or not all(isinstance(g, Mapping) for g in gens):
        raise ConfigError(
            f"{where}: needs `generators`, a list of endpoints like "
            '[{base_url = "http://127.0.0.1:8000/v1", model = "..."}]'
        )
    ver = data.get("verifier")
    if not isinstance(ver, Mapping):
        raise ConfigError(f"{where}: needs a `verifier` endpoint table (base_url, model, ...)")
    tf = data.get("test_fraction", 0.15)
    if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0 <= tf < 1:
        raise ConfigError(f"{where}: `test_fraction` = {tf!r}; give a number in [0, 1)")
    vr = data.get("verifier_rubric")
    if vr is None:
        rubric = load_rubric(Path(str(_builtin("verifier.toml"))))
    else:
        rp = Path(vr) if Path(vr).is_absolute() else base / vr
        rubric = load_rubric(rp if rp.is_file() else vr)
    out = data.get("out")
    return BuildConfig(
        path=path,
        seed=_int(data, "seed", 0, 0, where),
        out=None if out is None else (Path(out) if Path(out).is_absolute() else base / out),
        dimensions=dims,
        dimensions_source=dims_src,
        prompts=prompts,
        verifier_rubric=rubric,
        anchors=_anchors(data.get("anchors"), base, dims, needed, demos),
        demos=demos,
        max_regenerations=_int(data, "max_regenerations", 3, 0, where),
        test_fraction=float(tf),
        task_formats=formats,
        sources=_str_list(data, "sources", DEFAULT_SOURCES, where),
        sampling=_sampling(data, "sampling", DEFAULT_SAMPLING, where),
        verifier_sampling=_sampling(data, "verifier_sampling", DEFAULT_VERIFIER_SAMPLING, where),
        reask=bool(data.get("reask", True)),
        portions=portions,
        generators=[dict(g) for g in gens],
        verifier=dict(ver),
        length_tokenizer=_tokenizer(data.get("length_tokenizer"), base),
        raw=data,
    )
