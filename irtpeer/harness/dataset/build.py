"""``irtpeer dataset build``: instances move through brainstorm → attribution → reference →
negatives → verifier, one round of calls at a time, every call through the harness's executor and
append-only store.

Each instance is a small state machine whose every request is a function of the config, the seed,
the instance id and the replies it has seen so far (the generator of a stage, the demonstrations
and the per-call sampling seed are drawn from a random stream seeded by ``seed | instance | stage |
attempt``). So a rerun after a kill asks exactly the same questions in the same state, and the
store answers every one it has already paid for; the same config and seed give the same instances
from the same server replies. A regeneration is a new attempt (a new key, the rejection's reason in
the prompt); regenerations per instance are capped by ``max_regenerations``, after which the
instance is dropped with its reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backend import ChatRequest, Sampling
from ..errors import ConfigError, EndpointFatalError
from ..executor import CallUnit, run_units
from ..manifest import Progress, RunStats, build_manifest
from ..store import CallStore
from . import stages
from .spec import BuildConfig

__all__ = ["BuildResult", "Instance", "build_dataset", "plan_instances"]

VERIFY_CHECKS = ("V", "R", "N")


def seeded_rng(*parts: Any) -> random.Random:
    """A random stream determined by ``parts`` alone (not by the order calls are made in)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


@dataclass
class Instance:
    id: str
    portion: str
    dims: tuple[str, ...]
    task_format: str
    source: str
    phase: str = "brainstorm"  # brainstorm | attribution | reference | negatives | verify | done
    status: str = "pending"  # pending | verified | dropped | failed
    reason: str | None = None
    scenario: dict[str, Any] | None = None
    attribution: dict[str, Any] | None = None
    reference: str | None = None
    negatives: dict[str, str] = field(default_factory=dict)
    verdict: dict[str, dict[str, int]] = field(default_factory=dict)
    verifications: list[dict[str, bool]] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    feedback: dict[str, str] = field(default_factory=dict)
    regens: Counter = field(default_factory=Counter)
    generators: dict[str, str] = field(default_factory=dict)
    reasks: int = 0

    def record(self) -> dict[str, Any]:
        sc = self.scenario or {}
        return {
            "id": self.id,
            "portion": self.portion,
            "mask": list(self.dims),
            "status": self.status,
            "reason": self.reason,
            "seed_scene": sc.get("seed_scene"),
            "context": sc.get("context"),
            "trigger": sc.get("trigger"),
            "prompt": sc.get("prompt"),
            "task_format": sc.get("task_format", self.task_format),
            "source_category": sc.get("source_category", self.source),
            "rationale": sc.get("rationale"),
            "attribution": self.attribution,
            "reference": self.reference,
            "negatives": {d: self.negatives.get(d) for d in self.dims},
            "verdict": self.verdict,
            "verifications": self.verifications,
            "regenerations": dict(self.regens),
            "reasks": self.reasks,
            "generators": self.generators,
        }


def plan_instances(cfg: BuildConfig, limit: int | None = None) -> list[Instance]:
    """The instances of every portion, interleaved across portions (so ``--limit`` samples all)."""
    per: list[list[Instance]] = []
    for p in cfg.portions:
        offset = seeded_rng(cfg.seed, p.name, "format").randrange(len(cfg.task_formats))
        rows = []
        for j in range(p.count):
            iid = f"{p.name}-{j:04d}"
            fmt = cfg.task_formats[(j + offset) % len(cfg.task_formats)]  # balanced formats
            src = seeded_rng(cfg.seed, iid, "source").choice(cfg.sources)
            rows.append(Instance(iid, p.name, p.dims, fmt, src))
        per.append(rows)
    out = []
    for j in range(max(len(r) for r in per)):
        out.extend(r[j] for r in per if j < len(r))
    return out[:limit] if limit is not None else out


@dataclass
class BuildResult:
    instances: list[Instance]
    manifest: dict[str, Any]
    stats: Any  # pandas DataFrame of statistics
    out: Path

    @property
    def complete(self) -> bool:
        return self.manifest["status"] == "complete"


class _Builder:
    def __init__(self, cfg: BuildConfig, generators: dict, verifier_label: str):
        self.cfg = cfg
        self.generators = list(generators)
        self.verifier = verifier_label
        self.rubric = cfg.verifier_rubric

    # ---- planning the next calls of one instance ------------------------------------------------
    def plan(self, inst: Instance) -> list[tuple[str, CallUnit]]:
        if inst.phase == "brainstorm":
            spec = stages.brainstorm(self.cfg, inst, inst.feedback.get("brainstorm"))
            return [("brainstorm", self._gen_unit(inst, "brainstorm", spec))]
        if inst.phase == "attribution":
            return [
                (
                    "attribution",
                    self._gen_unit(inst, "attribution", stages.attribution(self.cfg, inst)),
                )
            ]
        if inst.phase == "reference":
            rng = self._rng(inst, "reference", "demos")
            spec = stages.reference(self.cfg, inst, rng, inst.feedback.get("reference"))
            return [("reference", self._gen_unit(inst, "reference", spec))]
        if inst.phase == "negatives":
            out = []
            for d in inst.dims:
                if d not in inst.negatives:
                    step = f"negative_{d}"
                    rng = self._rng(inst, step, "demos")
                    spec = stages.negative(self.cfg, inst, d, rng, inst.feedback.get(step))
                    out.append((step, self._gen_unit(inst, step, spec)))
            return out
        if inst.phase == "verify":
            return self._verify_units(inst)
        return []

    def _rng(self, inst: Instance, step: str, what: str) -> random.Random:
        return seeded_rng(self.cfg.seed, inst.id, step, inst.attempts[step], what)

    def _gen_unit(self, inst: Instance, step: str, spec: stages.StageSpec) -> CallUnit:
        label = self._rng(inst, step, "generator").choice(self.generators)
        inst.generators[step] = label
        seed = self._rng(inst, step, "sampling").randrange(2**31)
        sampling = Sampling(**{**self.cfg.sampling.to_dict(), "seed": seed})
        req = ChatRequest.make(spec.messages, sampling, spec.schema, spec.name)
        ctx = {"stage": f"dataset.{spec.name}", "instance": inst.id, "attempt": inst.attempts[step]}
        return CallUnit(
            label,
            req,
            ctx,
            validate=spec.validate,
            reask=stages.reask if self.cfg.reask else None,
        )

    def _verify_units(self, inst: Instance) -> list[tuple[str, CallUnit]]:
        sc = inst.scenario
        dims = self.cfg.dimensions
        scenario = (
            f"seed scene: {sc['seed_scene']}\ncontext: {sc['context']}\ntrigger: {sc['trigger']}\n"
            f"user prompt: {sc['prompt']}"
        )
        row = {
            "scenario": scenario,
            "active_dims": ", ".join(f"{d} ({dims[d].name})" for d in inst.dims),
            "attribution": json.dumps(inst.attribution, ensure_ascii=False),
            "reference": inst.reference,
        }
        todo = [("V", "V", row), ("R", "R", row)]
        for d in inst.dims:
            nrow = {**row, "target_dim": f"{d} ({dims[d].name})", "negative": inst.negatives[d]}
            todo.append((f"N_{d}", "N", nrow))
        out = []
        for tag, did, r in todo:
            dim = self.rubric.dimension(did)
            req = ChatRequest.make(
                self.rubric.messages(dim, r),
                self.cfg.verifier_sampling,
                self.rubric.json_schema(dim),
                f"verify_{did}",
            )
            ctx = {"stage": "dataset.verify", "rubric_hash": self.rubric.hash}
            out.append(
                (
                    tag,
                    CallUnit(
                        self.verifier,
                        req,
                        ctx,
                        validate=self._validator(dim),
                        reask=self._reasker(dim) if self.cfg.reask else None,
                    ),
                )
            )
        return out

    def _validator(self, dim):
        from ..rubrics import validate_reply

        return lambda res: validate_reply(self.rubric, dim, res.text, res.finish_reason)

    def _reasker(self, dim):
        def reask(req: ChatRequest, res, reason: str) -> ChatRequest:
            msgs = req.message_dicts() + [
                {"role": "assistant", "content": res.text or ""},
                self.rubric.reask_message(dim, reason),
            ]
            return ChatRequest.make(msgs, req.sampling, req.schema, req.schema_name)

        return reask

    # ---- advancing one instance with the outcome of its calls -----------------------------------
    def advance(self, inst: Instance, done: dict[str, CallUnit]) -> None:
        inst.reasks += sum(len(u.results) > 1 for u in done.values())
        failed = {t: u for t, u in done.items() if u.status == "failed"}
        if failed:  # no reply (retries exhausted, a 400): a rerun retries exactly these calls
            inst.status = "failed"
            inst.reason = "; ".join(f"{t}: {u.reason}" for t, u in failed.items())
            return
        if inst.phase == "verify":
            self._after_verify(inst, done)
            return
        invalid = {t: u for t, u in done.items() if u.status == "invalid"}
        for t, u in done.items():
            if t not in invalid:
                self._take(inst, t, u.value)
        if invalid:
            for t, u in invalid.items():
                if inst.status != "pending":
                    return
                reason = f"the reply was not usable ({u.reason})"
                if t.startswith("negative_"):
                    self._regenerate(inst, "invalid_reply", [t], reason, "negatives")
                else:
                    self._regenerate(inst, "invalid_reply", [t], reason, inst.phase)
            return
        if inst.phase == "negatives" and all(d in inst.negatives for d in inst.dims):
            inst.phase = "verify"

    def _take(self, inst: Instance, step: str, value: Any) -> None:
        if step == "brainstorm":
            inst.scenario = value
            inst.phase = "attribution"
        elif step == "attribution":
            named = set(value["required_dimensions"])
            missing = [d for d in inst.dims if d not in named]
            extra = [d for d in self.cfg.dimensions if d in named and d not in inst.dims]
            if not (missing or extra):
                inst.attribution = value
                inst.phase = "reference"
                return
            parts = []
            if missing:
                parts.append(f"the scenario does not need active dimension(s) {missing}")
            if extra:
                parts.append(f"it also needs inactive dimension(s) {extra}")
            self._regenerate(
                inst, "attribution", self._from("brainstorm", inst), "; ".join(parts), "brainstorm"
            )
        elif step == "reference":
            inst.reference = value
            inst.negatives = {}
            inst.phase = "negatives"
        else:
            inst.negatives[step.removeprefix("negative_")] = value

    def _from(self, step: str, inst: Instance) -> list[str]:
        """``step`` and every step after it (all get a new attempt when ``step`` is redone)."""
        order = ["brainstorm", "attribution", "reference"] + [f"negative_{d}" for d in inst.dims]
        return order[order.index(step) :]

    def _regenerate(
        self, inst: Instance, cause: str, steps: list[str], reason: str, phase: str
    ) -> None:
        inst.regens[cause] += 1
        if sum(inst.regens.values()) > self.cfg.max_regenerations:
            inst.status = "dropped"
            inst.reason = (
                f"{cause}: {reason} (limit of {self.cfg.max_regenerations} regenerations reached)"
            )
            return
        for s in steps:
            inst.attempts[s] += 1
            inst.feedback.pop(s, None)
        inst.feedback[steps[0]] = reason
        if phase == "brainstorm":
            inst.scenario = inst.attribution = inst.reference = None
            inst.negatives = {}
        elif phase == "reference":
            inst.reference = None
            inst.negatives = {}
        elif phase == "negatives":
            for s in steps:
                inst.negatives.pop(s.removeprefix("negative_"), None)
        inst.phase = phase

    def _after_verify(self, inst: Instance, done: dict[str, CallUnit]) -> None:
        problems: dict[str, str] = {}
        verdict = {}
        for tag, u in done.items():
            did = tag.split("_")[0]
            if u.status == "invalid":
                problems[tag] = f"the verifier gave no valid judgment ({u.reason})"
                continue
            verdict[tag] = u.value
            low = [k for k, v in u.value.items() if v < self.rubric.scale_max]
            if low:
                texts = {it.id: it.text for it in self.rubric.dimension(did).items}
                problems[tag] = "the verifier found these not met: " + " ".join(
                    f"{k}: {texts[k]}" for k in low
                )
        inst.verdict = verdict
        inst.verifications.append({t: t not in problems for t in done})
        if not problems:
            inst.status, inst.phase = "verified", "done"
            return
        if "V" in problems:
            self._regenerate(
                inst, "verify_V", self._from("brainstorm", inst), problems["V"], "brainstorm"
            )
        elif "R" in problems:
            self._regenerate(
                inst, "verify_R", self._from("reference", inst), problems["R"], "reference"
            )
        else:
            for tag, why in problems.items():
                if inst.status == "pending":
                    d = tag.removeprefix("N_")
                    self._regenerate(inst, "verify_N", [f"negative_{d}"], why, "negatives")


class _KeepOpen:
    """A backend whose ``aclose`` waits for the end of the build: the executor closes its backends
    after every run, but the rounds of a build share one event loop and one client per endpoint
    (a new HTTPS client per round would cost a TLS context and new connections each time)."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    async def aclose(self) -> None:
        return None


def _round_label(n: int, plan) -> str:
    kinds = Counter("verify" if tag[0] in "VRN" else tag.split("_")[0] for _, tag, _ in plan)
    return f"round {n} (" + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ")"


async def _rounds(builder: _Builder, instances, backends, store, stats, progress, max_rounds):
    """Rounds until no instance is pending: each round runs the next calls of every pending
    instance concurrently, then advances each instance with its outcomes."""
    kept = {label: _KeepOpen(b) for label, b in backends.items()}
    try:
        for n in range(1, max_rounds + 1):
            pending = [i for i in instances if i.status == "pending"]
            plan = [(inst, tag, unit) for inst in pending for tag, unit in builder.plan(inst)]
            if not plan:
                return
            bar = Progress(len(plan), _round_label(n, plan), progress)
            try:
                await run_units([u for _, _, u in plan], kept, store, stats, progress=bar)
            finally:
                bar.close()
            grouped: dict[str, dict[str, CallUnit]] = {}
            for inst, tag, unit in plan:
                grouped.setdefault(inst.id, {})[tag] = unit
            for inst in pending:
                if inst.id in grouped:
                    builder.advance(inst, grouped[inst.id])
    finally:
        for b in backends.values():
            await b.aclose()


def _backends(cfg: BuildConfig):
    from ..endpoints import make_backend, make_backends

    gens = make_backends(cfg.generators, "generator")
    label = str(cfg.verifier.get("label") or cfg.verifier.get("model"))
    if label in gens:
        raise ConfigError(
            f"the verifier and a generator are both labelled {label!r}; give the verifier a "
            'distinct `label` (e.g. label = "verifier")'
        )
    ver = make_backend(cfg.verifier)
    return gens, label, {**gens, label: ver}


def _check_rubric(cfg: BuildConfig) -> None:
    missing = [d for d in VERIFY_CHECKS if d not in cfg.verifier_rubric.dimension_ids]
    if missing:
        raise ConfigError(
            f"verifier rubric {cfg.verifier_rubric.source}: lacks dimension(s) {missing}; it needs "
            "V (attribution), R (reference) and N (negative), as in the built-in one"
        )


def build_dataset(
    cfg: BuildConfig,
    out: str | Path | None = None,
    *,
    limit: int | None = None,
    progress: bool | None = None,
    max_rounds: int = 1000,
) -> BuildResult:
    """Run (or resume) a build into ``out``; writes the review files, statistics and manifest."""
    from ..tables import atomic_write_json
    from .review import export_review, write_instances
    from .stats import build_statistics, write_statistics

    out = Path(out) if out is not None else cfg.out
    if out is None:
        raise ConfigError("no output folder: pass --out DIR or set `out` in the config file")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    _check_rubric(cfg)
    generators, vlabel, backends = _backends(cfg)
    out.mkdir(parents=True, exist_ok=True)
    instances = plan_instances(cfg, limit)
    builder = _Builder(cfg, generators, vlabel)
    stats = RunStats()
    settings = {
        "config": str(cfg.path),
        "seed": cfg.seed,
        "limit": limit,
        "instances_planned": len(instances),
        "portions": [
            {"name": p.name, "dimensions": list(p.dims), "count": p.count} for p in cfg.portions
        ],
        "dimensions": cfg.dimensions_source,
        "prompts": {"source": cfg.prompts.source, "hash": cfg.prompts.hash},
        "demos": cfg.demos,
        "max_regenerations": cfg.max_regenerations,
        "test_fraction": cfg.test_fraction,
        "length_tokenizer": cfg.raw.get("length_tokenizer"),
        "sampling": cfg.sampling.to_dict(),
        "verifier_sampling": cfg.verifier_sampling.to_dict(),
        "store": str(out / "calls.jsonl"),
    }
    manifest_path = out / "manifest.json"

    def manifest(status: str, outputs: dict | None = None) -> dict:
        return build_manifest(
            command="dataset build",
            settings=settings,
            stats=stats,
            backends=backends,
            rubrics=[cfg.verifier_rubric],
            outputs=outputs,
            status=status,
            extra={"instances": dict(Counter(i.status for i in instances))},
        )

    with CallStore(out / "calls.jsonl") as store:
        stats.add("store_records_at_start", store.loaded)
        try:
            asyncio.run(_rounds(builder, instances, backends, store, stats, progress, max_rounds))
        except EndpointFatalError:
            atomic_write_json(manifest("aborted"), manifest_path)
            raise
    for cause in ("attribution", "verify_V", "verify_R", "verify_N", "invalid_reply"):
        stats.add(f"regenerations_{cause}", sum(i.regens[cause] for i in instances))
    for st in ("verified", "dropped", "failed", "pending"):
        stats.add(f"instances_{st}", sum(i.status == st for i in instances))
    outputs = {
        "instances": str(write_instances(instances, out)),
        **{k: str(v) for k, v in export_review(instances, cfg, out).items()},
    }
    table = build_statistics(instances, cfg, stats)
    outputs["stats"] = str(write_statistics(table, out))
    incomplete = any(i.status in ("failed", "pending") for i in instances)
    m = manifest("incomplete" if incomplete else "complete", outputs)
    atomic_write_json(m, manifest_path)
    return BuildResult(instances, m, table, out)
