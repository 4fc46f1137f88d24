"""The requests of each construction stage and the strict checks of their replies.

Every stage asks for one JSON object with a JSON schema (sent as structured output where the
server supports it) and validates the reply itself: a JSON object (a Markdown code fence is
tolerated), exactly the schema's keys, non-empty strings, values from the allowed sets. A reply that
fails is re-asked once with the reason (the harness's :class:`CallUnit` does this), then counted as
invalid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backend import ChatRequest, ChatResult
from ..rubrics import parse_json_object
from .spec import BuildConfig, DimensionDef

__all__ = ["StageSpec", "attribution", "brainstorm", "negative", "reference"]



class StageSpec:
    """Messages, schema and validator of one generator call."""

    def __init__(self, name: str, messages: list[dict], schema: dict, validate: Callable):
        self.name = name
        self.messages = messages
        self.schema = schema
        self.validate = validate


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


_STR = {"type": "string"}


def parse_object(res: ChatResult, keys: list[str]) -> tuple[dict | None, str | None]:
    """A JSON object with exactly ``keys``, or the reason it is not one."""
    return parse_json_object(res.text, res.finish_reason, keys)


def _nonempty(obj: dict, keys: list[str]) -> str | None:
    for k in keys:
        if not isinstance(obj[k], str) or not obj[k].strip():
            return f"value of {k!r} must be a non-empty string, got {obj[k]!r}"
    return None


def _block(dims: list[DimensionDef]) -> str:
    return "\n".join(d.line() for d in dims) if dims else "- (none)"


def _feedback(cfg: BuildConfig, reason: str | None) -> str:
    return cfg.prompts.render("feedback", reason=reason) if reason else ""


def _messages(cfg: BuildConfig, user: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": cfg.prompts.texts["system"]},
        {"role": "user", "content": user},
    ]


def brainstorm(cfg: BuildConfig, inst, feedback: str | None) -> StageSpec:
    dims = cfg.dimensions
    active = [dims[d] for d in inst.dims]
    inactive = [d for k, d in dims.items() if k not in inst.dims]
    user = cfg.prompts.render(
        "brainstorm",
        instance=inst.id,
        active_block=_block(active),
        inactive_block=_block(inactive),
        active_ids=", ".join(inst.dims),
        task_format=inst.task_format,
        task_format_definition=cfg.prompts.task_formats[inst.task_format],
        source=inst.source,
        feedback=_feedback(cfg, feedback),
    )
    texts = ["seed_scene", "context", "trigger", "prompt"]
    schema = _obj(
        {
            **{k: _STR for k in texts},
            "task_format": {"type": "string", "enum": list(cfg.task_formats)},
            "source_category": {"type": "string", "enum": list(cfg.sources)},
            "rationale": _obj({d: _STR for d in inst.dims}),
        }
    )

    def validate(res: ChatResult):
        obj, why = parse_object(res, [*texts, "task_format", "source_category", "rationale"])
        if why:
            return None, why
        if why := _nonempty(obj, texts):
            return None, why
        if obj["task_format"] not in cfg.task_formats:
            return (
                None,
                f"task_format {obj['task_format']!r} is not one of {list(cfg.task_formats)}",
            )
        if obj["source_category"] not in cfg.sources:
            return (
                None,
                f"source_category {obj['source_category']!r} is not one of {list(cfg.sources)}",
            )
        rat = obj["rationale"]
        if not isinstance(rat, dict) or set(rat) != set(inst.dims):
            got = sorted(rat) if isinstance(rat, dict) else rat
            return None, f"rationale must have exactly the keys {list(inst.dims)}, got {got!r}"
        if why := _nonempty(rat, list(inst.dims)):
            return None, "rationale: " + why
        return obj, None

    return StageSpec("brainstorm", _messages(cfg, user), schema, validate)


def attribution(cfg: BuildConfig, inst) -> StageSpec:
    sc = inst.scenario
    ids = list(cfg.dimensions)
    user = cfg.prompts.render(
        "attribution",
        seed_scene=sc["seed_scene"],
        context=sc["context"],
        trigger=sc["trigger"],
        prompt=sc["prompt"],
        all_block=_block(list(cfg.dimensions.values())),
        all_ids=", ".join(ids),
    )
    schema = _obj(
        {
            "required_dimensions": {"type": "array", "items": {"type": "string", "enum": ids}},
            "explanation": _STR,
        }
    )

    def validate(res: ChatResult):
        obj, why = parse_object(res, ["required_dimensions", "explanation"])
        if why:
            return None, why
        req = obj["required_dimensions"]
        if not isinstance(req, list) or not all(isinstance(x, str) for x in req):
            return None, f"required_dimensions must be a list of dimension ids, got {req!r}"
        bad = [x for x in req if x not in ids]
        if bad:
            return None, f"required_dimensions names unknown dimension(s) {bad}; use {ids}"
        return {"required_dimensions": req, "explanation": str(obj["explanation"])}, None

    return StageSpec("attribution", _messages(cfg, user), schema, validate)


def demos_block(cfg: BuildConfig, dim: str, rng) -> str:
    """``cfg.demos`` anchoring examples of ``dim``, drawn with ``rng`` (seeded per call)."""
    if cfg.demos == 0:
        return ""
    rows = cfg.anchors[cfg.anchors["dimension"] == dim].to_dict("records")
    picked = rng.sample(rows, min(cfg.demos, len(rows)))
    d = cfg.dimensions[dim]
    parts = []
    for r in picked:
        text = cfg.prompts.render(
            "demo", dim_id=d.id, dim_name=d.name, prompt=r["prompt"], response=r["response"]
        )
        bad = r.get("bad_response")
        if isinstance(bad, str) and bad.strip():
            text += cfg.prompts.render("demo_bad", dim_id=d.id, dim_name=d.name, bad_response=bad)
        parts.append(text)
    return "\n" + "\n".join(parts)


def _text_stage(name: str, key: str, cfg: BuildConfig, user: str) -> StageSpec:
    def validate(res: ChatResult):
        obj, why = parse_object(res, [key])
        if why:
            return None, why
        if why := _nonempty(obj, [key]):
            return None, why
        return obj[key], None

    return StageSpec(name, _messages(cfg, user), _obj({key: _STR}), validate)


def reference(cfg: BuildConfig, inst, rng, feedback: str | None) -> StageSpec:
    sc = inst.scenario
    demos = "".join(demos_block(cfg, d, rng) for d in inst.dims)
    user = cfg.prompts.render(
        "reference",
        context=sc["context"],
        prompt=sc["prompt"],
        active_block=_block([cfg.dimensions[d] for d in inst.dims]),
        demos=demos,
        feedback=_feedback(cfg, feedback),
    )
    return _text_stage("reference", "reference", cfg, user)


def negative(cfg: BuildConfig, inst, dim: str, rng, feedback: str | None) -> StageSpec:
    sc = inst.scenario
    t = cfg.dimensions[dim]
    others = [cfg.dimensions[d] for d in inst.dims if d != dim]
    user = cfg.prompts.render(
        "negative",
        context=sc["context"],
        prompt=sc["prompt"],
        reference=inst.reference,
        target_id=t.id,
        target_name=t.name,
        target_failure=t.failure_mode,
        others_block=_block(others),
        demos=demos_block(cfg, dim, rng),
        feedback=_feedback(cfg, feedback),
    )
    return _text_stage(f"negative_{dim}", "negative", cfg, user)


def reask(req: ChatRequest, res: ChatResult, reason: str) -> ChatRequest:
    """The one follow-up after an invalid reply: the model sees its reply and the reason."""
    msgs = req.message_dicts() + [
        {"role": "assistant", "content": res.text or ""},
        {
            "role": "user",
            "content": f"Your reply could not be used ({reason}). Reply again with only the JSON "
            "object the instructions ask for, with exactly the keys they name.",
        },
    ]
    return ChatRequest.make(msgs, req.sampling, req.schema, req.schema_name)
