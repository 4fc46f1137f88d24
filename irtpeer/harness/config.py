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

from .errors import ConfigError

__all__ = ["load_config", "run_config"]

_ANSWER_KEYS = {"questions", "out", "system", "sampling", "models", "store", "manifest"}
_JUDGE_KEYS = {
    "answers",
    "rubric",
    "out",
    "replicates",
    "reask",
    "sampling",
    "judges",
    "store",
    "manifest",
}


def load_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"config file {str(p)!r}: use a .toml, .yaml or .yml file")
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - parse errors of two libraries, reported to the user
        raise ConfigError(f"cannot parse config file {str(p)!r}: {exc}") from None
    if not isinstance(data, dict) or not ({"answer", "judge"} & set(data)):
        raise ConfigError(f"config file {str(p)!r} needs an [answer] and/or a [judge] section")
    unknown = set(data) - {"answer", "judge"}
    if unknown:
        raise ConfigError(
            f"config file {str(p)!r}: unknown section(s) {sorted(unknown)}; use [answer] and [judge]"
        )
    for sec, keys in (("answer", _ANSWER_KEYS), ("judge", _JUDGE_KEYS)):
        bad = set(data.get(sec, {})) - keys
        if bad:
            raise ConfigError(
                f"config file {str(p)!r}: unknown key(s) {sorted(bad)} in [{sec}]; known: {sorted(keys)}"
            )
    return data


def run_config(path: str | Path, *, progress: bool | None = None) -> dict[str, tuple[Any, Path]]:
    from .answer import DEFAULT_ANSWER_SAMPLING, answer_questions
    from .backend import Sampling
    from .endpoints import make_backends
    from .judge import DEFAULT_JUDGE_SAMPLING, default_paths, judge_answers
    from .rubrics import load_rubric
    from .tables import read_table

    cfg = load_config(path)
    base = Path(path).resolve().parent

    def rel(v: str | None) -> Path | None:
        return None if v is None else (base / v if not Path(v).is_absolute() else Path(v))

    def sampling(sec: dict, default: Sampling) -> Sampling:
        return Sampling.from_dict({**default.to_dict(), **(sec.get("sampling") or {})})

    def need(sec: dict, key: str, name: str):
        if not sec.get(key):
            raise ConfigError(f"config file {str(path)!r}: [{name}] needs `{key}`")
        return sec[key]

    results: dict[str, tuple[Any, Path]] = {}
    answers_path = None
    if "answer" in cfg:
        a = cfg["answer"]
        out = rel(need(a, "out", "answer"))
        store, manifest = default_paths(out)
        models = make_backends(need(a, "models", "answer"), "model")
        res = answer_questions(
            read_table(rel(need(a, "questions", "answer")), "questions"),
            models,
            store_path=rel(a.get("store")) or store,
            out=out,
            manifest_path=rel(a.get("manifest")) or manifest,
            sampling=sampling(a, DEFAULT_ANSWER_SAMPLING),
            system_prompt=a.get("system"),
            progress=progress,
            settings={"config": str(path)},
        )
        results["answer"] = (res, out)
        answers_path = out
    if "judge" in cfg:
        j = cfg["judge"]
        src = rel(j.get("answers")) or answers_path
        if src is None:
            raise ConfigError(
                f"config file {str(path)!r}: [judge] needs `answers` when there is no [answer] section"
            )
        out = rel(need(j, "out", "judge"))
        store, manifest = default_paths(out)
        judges = make_backends(need(j, "judges", "judge"), "judge")
        rubric_ref = j.get("rubric", "persona")
        rubric_path = rel(rubric_ref)
        rubric = load_rubric(
            rubric_path if rubric_path is not None and rubric_path.is_file() else rubric_ref
        )
        res = judge_answers(
            read_table(src, "answers"),
            judges,
            rubric,
            store_path=rel(j.get("store")) or store,
            out=out,
            manifest_path=rel(j.get("manifest")) or manifest,
            sampling=sampling(j, DEFAULT_JUDGE_SAMPLING),
            replicates=int(j.get("replicates", 1)),
            reask=bool(j.get("reask", True)),
            progress=progress,
            settings={"config": str(path), "answers": str(src)},
        )
        results["judge"] = (res, out)
    return results
