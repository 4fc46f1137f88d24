"""Runs call units against backends: store look-ups, concurrency, one re-ask, failure recording.

A :class:`CallUnit` is one logical call (one answer to generate, or one judge × answer × dimension
to score). It needs one request, and — when its reply fails validation — one re-ask that shows the
model its reply and the reason. Each request is looked up in the :class:`CallStore` by its key
first; only misses are sent, and every reply is stored the moment it arrives, so a killed run
resumes exactly where it stopped (a re-ask whose first reply was stored is not sent again either).

Units with equal keys are one call: the first is run, the others take its outcome
(``calls_coalesced``), so nothing identical is sent twice and counts never depend on timing.

Asynchronous backends send one call alone first, the canary (a wrong key, model name or URL
costs one call, not ``concurrency`` or the whole run), then run ``concurrency`` workers each; batched backends (vLLM offline,
transformers) get chunks of requests in a worker thread. On an :class:`EndpointFatalError` no new
call starts; calls in flight finish and are stored (they are paid for), then the error is raised.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .backend import Backend, ChatRequest, ChatResult
from .errors import CallFailed, EndpointFatalError
from .manifest import Progress, RunStats, build_manifest
from .store import CallStore, call_key
from .tables import atomic_write_json

__all__ = ["CallUnit", "run_units"]

Validator = Callable[[ChatResult], "tuple[Any, str | None]"]
Reasker = Callable[[ChatRequest, ChatResult, str], ChatRequest]


@dataclass(eq=False)
class CallUnit:
    backend: str
    request: ChatRequest
    context: dict[str, Any]
    validate: Validator | None = None
    reask: Reasker | None = None
    # filled in while running
    results: list[ChatResult] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    value: Any = None
    status: str = "not_run"  # ok | ok_after_reask | invalid | failed | not_run
    reason: str | None = None
    call_id: str | None = None  # key of the first request: the id of this call in tables
    _next: tuple[str, ChatRequest] | None = None
    _first_reason: str | None = None

    def start(self, identity: dict[str, Any]) -> None:
        self._identity = identity
        self._next = (call_key(identity, self.request, **self.context), self.request)
        self.call_id = self._next[0]

    def next_call(self) -> tuple[str, ChatRequest] | None:
        return self._next

    def accept(self, key: str, res: ChatResult) -> None:
        _, req = self._next
        self.keys.append(key)
        self.results.append(res)
        self._next = None
        if self.validate is None:
            self.value, self.status = res.text, "ok"
            return
        value, reason = self.validate(res)
        if reason is None:
            self.value = value
            self.status = "ok" if len(self.results) == 1 else "ok_after_reask"
            self.reason = (
                None if len(self.results) == 1 else f"first reply invalid: {self._first_reason}"
            )
            return
        if len(self.results) == 1:
            self._first_reason = reason
        if len(self.results) == 1 and self.reask is not None:
            req2 = self.reask(req, res, reason)
            self._next = (call_key(self._identity, req2, **self.context, reask=1), req2)
            self.status, self.reason = "invalid", reason
            return
        self.status = "invalid"
        self.reason = (
            reason if len(self.results) == 1 else f"{self._first_reason}; after re-ask: {reason}"
        )

    def follow(self, leader: CallUnit) -> None:
        """Take the outcome of an identical unit (same key) that was run in its place."""
        self.results, self.keys = list(leader.results), list(leader.keys)
        self.value, self.status, self.reason = leader.value, leader.status, leader.reason
        self._next = leader._next

    def fail(self, exc: CallFailed) -> None:
        self._next = None
        self.status = "failed"
        self.reason = f"{exc.kind}: {exc}"


async def run_units(
    units: list[CallUnit],
    backends: dict[str, Backend],
    store: CallStore,
    stats: RunStats,
    *,
    progress: Progress | None = None,
    batch_size: int = 256,
) -> None:
    """Drive every unit to a final status (or raise :class:`EndpointFatalError`).

    Units with the same key are one call: the first runs, the others take its outcome (counted
    as ``calls_coalesced``), so an identical call is never sent twice and the counts do not
    depend on which request finished first."""
    pending: dict[str, deque[CallUnit]] = defaultdict(deque)
    leaders: dict[str, CallUnit] = {}
    followers: list[tuple[CallUnit, CallUnit]] = []
    for u in units:
        u.start(backends[u.backend].identity())
        if u.call_id in leaders:
            followers.append((u, leaders[u.call_id]))
            continue
        leaders[u.call_id] = u
        if _resolve_cached(u, store, stats, backends):
            if progress:
                progress.update()
            continue
        pending[u.backend].append(u)
    stats.add("calls_planned", len(units))
    stats.add("calls_coalesced", len(followers))

    # one concurrency limit per endpoint: backends on the same server share it
    limits: dict[str, asyncio.Semaphore] = {}
    for b in backends.values():
        key = getattr(b, "limit_key", None)
        if key is not None:
            if key not in limits:
                limits[key] = asyncio.Semaphore(
                    min(
                        x.concurrency
                        for x in backends.values()
                        if getattr(x, "limit_key", None) == key
                    )
                )
            b.bind_limiter(limits[key])
    abort: list[EndpointFatalError] = []
    tasks = []
    for label, queue in pending.items():
        b = backends[label]
        if b.batched:
            tasks.append(
                _drive_batched(
                    label,
                    b,
                    queue,
                    store,
                    stats,
                    progress,
                    abort,
                    max(batch_size, getattr(b, "batch_size", 0)),
                )
            )
        else:
            tasks.append(_drive_async(label, b, queue, store, stats, progress, abort))
    try:
        await asyncio.gather(*tasks)
    finally:
        for b in backends.values():
            await b.aclose()
    for u, leader in followers:
        u.follow(leader)
        if progress and u.next_call() is None:
            progress.update()
    if abort:
        raise abort[0]


def _resolve_cached(u: CallUnit, store: CallStore, stats: RunStats, backends) -> bool:
    """Answer the unit from the store as far as possible; True when it is finished."""
    while (nxt := u.next_call()) is not None:
        key, _ = nxt
        res = store.get(key)
        if res is None:
            return False
        stats.add("calls_cached")
        stats.add_usage(u.backend, res, cached=True)
        u.accept(key, res)
        _count_outcome(u, stats)
    return True


def _count_outcome(u: CallUnit, stats: RunStats) -> None:
    if u.validate is None:
        return
    if u._next is not None:  # a re-ask is due
        stats.add("replies_invalid")
        stats.add("reasks")
    elif u.status == "invalid":
        stats.add("replies_invalid")
        stats.add("judgments_invalid")
    elif u.status == "ok_after_reask":
        stats.add("judgments_ok_after_reask")


def _record(
    label: str, u: CallUnit, key: str, res: ChatResult, store: CallStore, stats: RunStats
) -> None:
    store.put(key, res)  # stored first: whatever happens next, this reply is never paid again
    stats.add("calls_done")
    stats.add_usage(label, res, cached=False)
    u.accept(key, res)
    _count_outcome(u, stats)


async def _process(label, backend, u: CallUnit, store, stats, progress, abort) -> None:
    while not abort and (nxt := u.next_call()) is not None:
        key, req = nxt
        cached = store.get(key)
        if cached is not None:  # e.g. a re-ask stored by an earlier run
            stats.add("calls_cached")
            stats.add_usage(label, cached, cached=True)
            u.accept(key, cached)
            _count_outcome(u, stats)
            continue
        try:
            res = await backend.chat(req, stats)
        except CallFailed as exc:
            u.fail(exc)
            stats.add("calls_failed")
            break
        except EndpointFatalError as exc:
            abort.append(exc)
            return
        _record(label, u, key, res, store, stats)
    if u.next_call() is None and progress:
        progress.update()


async def _worker(label, backend, queue: deque, store, stats, progress, abort) -> None:
    while queue and not abort:
        await _process(label, backend, queue.popleft(), store, stats, progress, abort)


async def _drive_async(label, backend, queue: deque, store, stats, progress, abort) -> None:
    """One call alone first (a wrong key or model fails once, not ``concurrency`` times), then
    ``concurrency`` workers."""
    if queue and not abort:
        await _process(label, backend, queue.popleft(), store, stats, progress, abort)
    n = min(backend.concurrency, len(queue))
    await asyncio.gather(
        *(_worker(label, backend, queue, store, stats, progress, abort) for _ in range(n))
    )


async def _drive_batched(
    label, backend, queue: deque, store, stats, progress, abort, batch_size
) -> None:
    while queue and not abort:
        chunk = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        calls = [(u, *u.next_call()) for u in chunk]
        try:
            results = await asyncio.to_thread(
                backend.chat_batch, [req for _, _, req in calls], stats
            )
        except EndpointFatalError as exc:
            abort.append(exc)
            return
        for (u, key, _), res in zip(calls, results):
            if isinstance(res, CallFailed):
                u.fail(res)
                stats.add("calls_failed")
            else:
                _record(label, u, key, res, store, stats)
            nxt = u.next_call()
            if nxt is not None:
                cached = store.get(nxt[0])
                if cached is not None:
                    stats.add("calls_cached")
                    u.accept(nxt[0], cached)
                    _count_outcome(u, stats)
            if u.next_call() is not None:
                queue.append(u)
            elif progress:
                progress.update()


def execute_stage(
    *,
    command: str,
    units: list[CallUnit],
    backends: dict[str, Any],
    store_path,
    stats: RunStats,
    run_settings: dict[str, Any],
    manifest_path,
    progress: bool,
    rubrics: list[Any] = (),
) -> None:
    """Run a stage's calls against its store, with a progress bar.

    When an endpoint fails fatally (a wrong key, an exhausted quota) the manifest is written with
    status ``aborted`` before the error propagates, so the run's counts are never lost.
    """
    import asyncio

    bar = Progress(len(units), command, progress)
    with CallStore(store_path) as store:
        stats.add("store_records_at_start", store.loaded)
        try:
            asyncio.run(run_units(units, backends, store, stats, progress=bar))
        except EndpointFatalError:
            bar.close()
            if manifest_path is not None:
                atomic_write_json(
                    build_manifest(
                        command=command,
                        settings=run_settings,
                        stats=stats,
                        backends=backends,
                        rubrics=list(rubrics),
                        status="aborted",
                    ),
                    manifest_path,
                )
            raise
        bar.close()
