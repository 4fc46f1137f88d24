"""Run accounting: counters, token usage and cost, the progress bar, and the run manifest file.

The manifest (``<out>.manifest.json``) records what produced a table: irtpeer / openai / Python
versions, the command's settings (endpoints without secrets), rubric ids and hashes, and counts of
calls (planned, cached, sent, retried by cause, failed by cause, invalid replies, re-asks), tokens
and estimated cost. Counter names:

* ``requests_sent`` — HTTP requests (or engine prompts) actually sent, retries included;
* ``retry_<cause>`` — retries by cause: ``http_429``, ``http_500``, ``timeout``, ``connection``, ``bad_body``;
* ``failed_<cause>`` — calls given up (null score); ``fatal_<cause>`` — errors that stopped the run;
* ``calls_cached`` / ``calls_done`` — calls answered from the store / by the backend in this run;
* ``replies_invalid`` / ``reasks`` / ``judgments_invalid`` — validation outcomes.
"""

from __future__ import annotations

import platform
import sys
import time
from collections import Counter
from typing import Any

from .errors import redact

__all__ = ["Progress", "RunStats", "build_manifest"]


class RunStats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.tokens: dict[str, Counter[str]] = {}
        self.started = time.time()
        self._t0 = time.perf_counter()

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def add_usage(self, label: str, result, *, cached: bool) -> None:
        c = self.tokens.setdefault(label, Counter())
        prefix = "cached_" if cached else ""
        c[prefix + "prompt_tokens"] += int(result.prompt_tokens or 0)
        c[prefix + "completion_tokens"] += int(result.completion_tokens or 0)

    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def cost(self, backends: dict[str, Any]) -> dict[str, Any]:
        """Estimated cost of the tokens sent in this run (cached calls cost nothing again).

        ``estimated_usd`` is the sum over the endpoints that have prices (``None`` when none has);
        ``unpriced`` lists the endpoints that used tokens but have no price, so the estimate is
        complete only when it is empty."""
        total, priced, unpriced = 0.0, False, []
        per: dict[str, float | None] = {}
        for label, c in self.tokens.items():
            b = backends.get(label)
            pin = getattr(b, "price_input_per_mtok", None)
            pout = getattr(b, "price_output_per_mtok", None)
            if pin is None or pout is None:
                per[label] = None
                if c["prompt_tokens"] + c["completion_tokens"] > 0:
                    unpriced.append(label)
                continue
            usd = (c["prompt_tokens"] * pin + c["completion_tokens"] * pout) / 1e6
            per[label] = round(usd, 6)
            total += usd
            priced = True
        return {
            "estimated_usd": round(total, 6) if priced else None,
            "per_endpoint_usd": per,
            "unpriced": sorted(unpriced),
            "complete": priced and not unpriced,
        }


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except Exception:  # noqa: BLE001 - a version we cannot read is recorded as null
        return None


def build_manifest(
    *,
    command: str,
    settings: dict[str, Any],
    stats: RunStats,
    backends: dict[str, Any],
    rubrics: list[Any] = (),
    outputs: dict[str, str] | None = None,
    status: str = "complete",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from .. import __version__

    elapsed = stats.elapsed()
    done = stats.counts.get("calls_done", 0)
    m = {
        "command": command,
        "status": status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(stats.started)),
        "elapsed_s": round(elapsed, 3),
        "versions": {
            "irtpeer": __version__,
            "python": platform.python_version(),
            "openai": _version("openai"),
            "pandas": _version("pandas"),
            "vllm": _version("vllm"),
            "transformers": _version("transformers"),
        },
        "platform": f"{platform.system()} {platform.machine()}",
        "settings": settings,
        "endpoints": {label: b.describe() for label, b in backends.items()},
        "rubrics": [
            {"id": r.id, "version": r.version, "hash": r.hash, "source": r.source} for r in rubrics
        ],
        "counts": dict(sorted(stats.counts.items())),
        "tokens": {label: dict(c) for label, c in stats.tokens.items()},
        "cost": stats.cost(backends),
        "throughput_calls_per_s": round(done / elapsed, 3) if elapsed > 0 else None,
        "outputs": outputs or {},
        "argv": [redact(a) for a in sys.argv],
    }
    if extra:
        m.update(extra)
    return m


class Progress:
    """A tqdm progress bar (throughput and ETA) on stderr; silent when ``enabled`` is False."""

    def __init__(self, total: int, desc: str, enabled: bool | None = None, initial: int = 0):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self._bar = None
        if enabled and total:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit="call",
                dynamic_ncols=True,
                smoothing=0.1,
                file=sys.stderr,
                disable=False,  # shown when asked for, whatever TQDM_DISABLE says
            )

    def update(self, n: int = 1, **postfix: Any) -> None:
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
