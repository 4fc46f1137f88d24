"""Content-addressed call cache on an append-only JSON-lines file.

Every reply a backend returns is appended to the store as one line, *before* anything else is done
with it, and flushed to the operating system at once: a crash or ``kill -9`` of the process loses
nothing that a server was paid for. The file is also ``fsync``-ed at most every ``fsync_every``
seconds and when the store closes (a power cut can lose at most that window).

The key of a call is the SHA-256 of everything that determines its output: the backend identity
(kind, endpoint URL, model, structured-output mode), the messages, the sampling settings, the JSON
schema, and caller-supplied context: whose call it is (stage, evaluated model, question, judge
label, rubric hash, replicate; see :mod:`.judge` and :mod:`.answer`). Never the API key.

A rerun opens the same store, reads it back, and skips every call whose key is present. A line
cut short by a kill (no final newline) is dropped and the file truncated to the last complete line.
Only one process may write a store at a time (an exclusive ``flock``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .backend import ChatRequest, ChatResult
from .errors import ConfigError

__all__ = ["CallStore", "call_key"]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def call_key(identity: dict[str, Any], request: ChatRequest, **context: Any) -> str:
    """The cache key of one call: a hash of everything that determines its output."""
    payload = {
        "backend": identity,
        "messages": request.messages,
        "sampling": request.sampling.to_dict(),
        "schema": request.schema,
        "context": context,
    }
    return hashlib.sha256(_dumps(payload).encode("utf-8")).hexdigest()


class CallStore:
    def __init__(self, path: str | os.PathLike, *, fsync_every: float = 1.0):
        self.path = Path(path)
        self.fsync_every = fsync_every
        self._records: dict[str, dict[str, Any]] = {}
        self._fh = None
        self._last_sync = time.monotonic()
        self.loaded = 0
        self.dropped_partial = 0

    # ---- lifecycle -------------------------------------------------------------------------
    def open(self) -> CallStore:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+b")  # noqa: SIM115 - held open (and locked) until close()
        try:
            import fcntl

            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise ConfigError(
                    f"the call store {self.path} is in use by another irtpeer run; wait for it to "
                    "finish or pass a different --store"
                ) from None
        except ImportError:  # pragma: no cover - no flock on this platform
            pass
        fh.seek(0)
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut short by a crash: drop it
            self.dropped_partial = 1
            fh.truncate(end)
            data = data[:end]
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                self._records[rec["key"]] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                self.dropped_partial += 1
        self.loaded = len(self._records)
        fh.seek(0, os.SEEK_END)
        self._fh = fh
        return self

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()  # releases the lock
            self._fh = None

    def __enter__(self) -> CallStore:  # noqa: PYI034
        return self.open() if self._fh is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- access ----------------------------------------------------------------------------
    def __contains__(self, key: str) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: str) -> ChatResult | None:
        rec = self._records.get(key)
        if rec is None:
            return None
        return ChatResult(
            text=rec.get("text"),
            finish_reason=rec.get("finish_reason"),
            prompt_tokens=rec.get("prompt_tokens"),
            completion_tokens=rec.get("completion_tokens"),
            latency_s=rec.get("latency_s", 0.0),
            retries=rec.get("retries", 0),
        )

    def put(self, key: str, result: ChatResult, **meta: Any) -> None:
        """Append one reply and flush it to the OS before returning."""
        rec = {
            "key": key,
            "text": result.text,
            "finish_reason": result.finish_reason,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "latency_s": round(result.latency_s, 6),
            "retries": result.retries,
            "time": time.time(),
        }
        if meta:
            rec["meta"] = meta
        self._fh.write((_dumps(rec) + "\n").encode("utf-8"))
        self._fh.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_every:
            os.fsync(self._fh.fileno())
            self._last_sync = now
        self._records[key] = rec
