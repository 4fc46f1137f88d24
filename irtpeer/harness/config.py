"""``irtpeer run CONFIG``: both stages from one TOML or YAML file.

::

    [answer]
    questions = "questions.csv"        # columns question, prompt [, dimensions, system, ...]
    out = "answers.parquet"
    system = "You are a helpful assistant."      # optional
    sampling = { temperature = 0.7, max_tokens = 512, seed = 1 }
    [[answer.models]]
    label = "qwen-base"; backend = "openai"; base_url = "http://127.0.0.1:8000/v1"; model = "Qwen/Qwen3-4B"
    [[answer.models]]
    label = "qwen-lagdpo"; backend = "transformers"; model = "runs/lagdpo/checkpoint-final"

    [judge]
    rubric = "persona"                 # built-in name or a path
    out = "ratings.parquet"
    replicates = 1; reask = true
    sampling = { temperature = 0.0, max_tokens = 256 }
    [[judge.judges]]
    base_url = "https://api.openai.com/v1"; model = "gpt-4.1-mini"; concurrency = 32
    price_input_per_mtok = 0.4; price_output_per_mtok = 1.6

Either section may be left out (``[judge]`` then needs ``answers = "..."``). Relative paths are
relative to the config file. Store and manifest paths default to the outputs' with
``.calls.jsonl`` / ``.manifest.json``; ``store`` / ``manifest`` keys override them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError, RubricError
from .schema import RunConfig, validate

__all__ = ["load_config", "parse_config", "run_config"]


def _read(p: Path) -> Any:
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - parse errors of two libraries, reported to the user
        first = str(exc).strip().replace("\n", " ")
        raise ConfigError(f"cannot parse config file {str(p)!r}: {first}") from None
    raise ConfigError(f"config file {str(p)!r}: use a .toml, .yaml or .yml file")


def parse_config(path: str | Path) -> RunConfig:
    """Read and validate the whole file; any error is one line naming the key."""
    p = Path(path)
    data = _read(p)
    prefix = f"config file {str(p)!r}"
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix} needs an [answer] and/or a [judge] section")
    return validate(RunConfig, data, prefix)


def load_config(path: str | Path) -> dict[str, Any]:
    """The validated config as a plain dict (keys that were not given are left out)."""
    return parse_config(path).model_dump(exclude_unset=True)


def _sampling(spec, default):
    from .backend import Sampling

    given = spec.model_dump(exclude_none=True) if spec is not None else {}
    return Sampling.from_dict({**default.to_dict(), **given})


def _rubric(ref: str, base: Path, prefix: str):
    from .rubrics import load_rubric

    where = f"{prefix}: judge.rubric"
    cand = Path(ref) if Path(ref).is_absolute() else base / ref
    try:
        return load_rubric(cand if cand.is_file() else ref, option=where)
    except RubricError as exc:
        msg = str(exc)
        raise RubricError(msg if msg.startswith(where) else f"{where} = {ref!r}: {msg}") from None


def run_config(path: str | Path, *, progress: bool | None = None) -> dict[str, tuple[Any, Path]]:
    """Run the stages of a config file. Everything is checked before the first call is sent: the
    schema, both sections' endpoints (and their API-key variables), the rubric and the input
    tables, so a mistake in ``[judge]`` never surfaces after ``[answer]`` was paid for."""
    from .answer import DEFAULT_ANSWER_SAMPLING, answer_questions
    from .endpoints import make_backends
    from .judge import DEFAULT_JUDGE_SAMPLING, default_paths, judge_answers
    from .tables import read_table

    cfg = parse_config(path)
    prefix = f"config file {str(path)!r}"
    base = Path(path).resolve().parent

    def rel(v: str | None) -> Path | None:
        return None if v is None else (Path(v) if Path(v).is_absolute() else base / v)

    a, j = cfg.answer, cfg.judge
    plan: dict[str, dict[str, Any]] = {}
    if a is not None:
        out = rel(a.out)
        plan["answer"] = {
            "models": make_backends(a.models, "model"),
            "questions": read_table(rel(a.questions), "questions"),
            "out": out,
            "paths": default_paths(out),
            "sampling": _sampling(a.sampling, DEFAULT_ANSWER_SAMPLING),
        }
    if j is not None:
        out = rel(j.out)
        src = rel(j.answers) if j.answers else plan["answer"]["out"]
        plan["judge"] = {
            "judges": make_backends(j.judges, "judge"),
            "rubric": _rubric(j.rubric, base, prefix),
            "src": src,
            # an answers file given beside an [answer] section is read after that stage ran
            "answers": read_table(src, "answers") if a is None else None,
            "out": out,
            "paths": default_paths(out),
            "sampling": _sampling(j.sampling, DEFAULT_JUDGE_SAMPLING),
        }

    results: dict[str, tuple[Any, Path]] = {}
    if a is not None:
        pa = plan["answer"]
        res = answer_questions(
            pa["questions"],
            pa["models"],
            store_path=rel(a.store) or pa["paths"][0],
            out=pa["out"],
            manifest_path=rel(a.manifest) or pa["paths"][1],
            sampling=pa["sampling"],
            system_prompt=a.system,
            progress=progress,
            settings={"config": str(path)},
        )
        results["answer"] = (res, pa["out"])
    if j is not None:
        pj = plan["judge"]
        answers = pj["answers"] if pj["answers"] is not None else read_table(pj["src"], "answers")
        res = judge_answers(
            answers,
            pj["judges"],
            pj["rubric"],
            store_path=rel(j.store) or pj["paths"][0],
            out=pj["out"],
            manifest_path=rel(j.manifest) or pj["paths"][1],
            sampling=pj["sampling"],
            replicates=j.replicates,
            reask=j.reask,
            progress=progress,
            settings={"config": str(path), "answers": str(pj["src"])},
        )
        results["judge"] = (res, pj["out"])
    return results
