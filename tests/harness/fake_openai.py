"""A real OpenAI-compatible HTTP server on 127.0.0.1 for harness tests and the benchmark.

asyncio-based HTTP/1.1 with keep-alive, run in a background thread (tests) or its own process
(benchmark). It answers ``POST .../chat/completions``: judge prompts (recognised by a JSON schema in
``response_format`` or by "exactly N keys: A1, A2, A3" in the last user message) get a JSON object
with deterministic 0/1 scores; other prompts get a short text answer. Faults are injected by rules
(``add_fault``) that match a substring of the request body and fire a given number of times.
Every request is recorded (body, Authorization header, time) so tests can count what was sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass

_KEYS = re.compile(r"exactly \w+ keys: ([A-Za-z0-9_, ]+?)\.")


@dataclass
class Fault:
    action: str  # status | timeout | malformed | missing | extra | notjson | fenced | quota | length | drop
    match: str | None = None
    times: int = 1
    status: int = 500
    headers: dict | None = None
    body: dict | None = None
    delay: float = 0.0


def score_for(text: str, key: str) -> int:
    return hashlib.sha256((text + "|" + key).encode()).digest()[0] % 2


def fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class FakeOpenAIServer:
    def __init__(self, delay: float = 0.0, api_key: str | None = None, record: bool = True):
        self.delay = delay
        self.api_key = api_key
        self.record = record
        self.requests: list[dict] = []
        self.faults: list[Fault] = []
        self.replies: list[tuple[tuple[str, ...], str]] = []
        self.count = 0
        self._lock = threading.Lock()
        self._loop = None
        self._server = None
        self._thread = None
        self.port = None

    # ---- control -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def add_fault(self, action: str, match: str | None = None, times: int = 1, **kw) -> Fault:
        f = Fault(action, match, times, **kw)
        with self._lock:
            self.faults.append(f)
        return f

    def add_reply(self, text: str, *matches: str) -> None:
        """Answer ``text`` to requests whose body contains every one of ``matches`` (first rule wins)."""
        self.replies.append((matches, text))

    def fingerprints(self) -> list[str]:
        return [fingerprint(r["body"]) for r in self.requests]

    def start(self) -> FakeOpenAIServer:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        fut.result(10)
        return self

    async def _start(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None:
            return

        async def _close():
            self._server.close()

        asyncio.run_coroutine_threadsafe(_close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- HTTP ----------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(n) if n else b""
                status, extra_headers, payload, delay = self._respond(method, path, headers, raw)
                if status is None:  # fault "drop": close the connection without a reply
                    break
                if delay:
                    await asyncio.sleep(delay)
                hdr = [
                    f"HTTP/1.1 {status} X",
                    f"Content-Length: {len(payload)}",
                    "Content-Type: application/json",
                ]
                hdr += [f"{k}: {v}" for k, v in (extra_headers or {}).items()]
                writer.write(("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001, S110 - the client may be gone already
                pass

    def _respond(self, method: str, path: str, headers: dict, raw: bytes):
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            return 404, None, json.dumps({"error": {"message": f"no route {path}"}}).encode(), 0
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return 400, None, b'{"error": {"message": "bad json"}}', 0
        auth = headers.get("authorization", "")
        with self._lock:
            self.count += 1
            if self.record:
                self.requests.append({"body": body, "auth": auth, "t": time.monotonic()})
            fault = None
            text = raw.decode("utf-8", "replace")
            for f in self.faults:
                if f.times > 0 and (f.match is None or f.match in text):
                    f.times -= 1
                    fault = f
                    break
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            given = auth.removeprefix("Bearer ")
            msg = {
                "error": {
                    "message": f"Incorrect API key provided: {given}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
            return 401, None, json.dumps(msg).encode(), 0
        delay = self.delay
        content = self._content(body)
        for matches, reply in self.replies:
            if all(m in text for m in matches):
                content = reply
                break
        finish = "stop"
        if fault is not None:
            a = fault.action
            if a == "status":
                return (
                    fault.status,
                    fault.headers,
                    json.dumps(fault.body or {"error": {"message": "injected"}}).encode(),
                    fault.delay,
                )
            if a == "drop":
                return None, None, b"", 0
            if a == "quota":
                msg = {
                    "error": {
                        "message": "You exceeded your current quota.",
                        "type": "insufficient_quota",
                        "code": "insufficient_quota",
                    }
                }
                return 429, None, json.dumps(msg).encode(), 0
            if a == "timeout":
                delay = fault.delay
            elif a == "notjson":
                return 200, None, b"<html>gateway hiccup</html>", 0
            elif a == "malformed":
                content = content[: max(1, len(content) // 2)]
            elif a == "missing":
                obj = json.loads(content)
                obj.pop(max(obj))
                content = json.dumps(obj)
            elif a == "extra":
                obj = json.loads(content)
                obj["Z9"] = 1
                content = json.dumps(obj)
            elif a == "fenced":
                content = "```json\n" + content + "\n```"
            elif a == "length":
                content, finish = content[:5], "length"
        ptok = len(text) // 4
        reply = {
            "id": f"chatcmpl-{self.count}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "?"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": ptok,
                "completion_tokens": len(content) // 4,
                "total_tokens": ptok + len(content) // 4,
            },
        }
        return 200, None, json.dumps(reply).encode(), delay

    def _content(self, body: dict) -> str:
        msgs = body.get("messages") or [{}]
        first_user = next((m.get("content", "") for m in msgs if m.get("role") == "user"), "")
        keys = None
        rf = body.get("response_format")
        if isinstance(rf, dict) and rf.get("type") == "json_schema":
            keys = list(rf["json_schema"]["schema"]["properties"])
        else:
            m = _KEYS.search(msgs[-1].get("content", ""))
            if m:
                keys = [k.strip() for k in m.group(1).split(",") if k.strip()]
        if keys:
            return json.dumps({k: score_for(first_user + body.get("model", ""), k) for k in keys})
        return f"[{body.get('model')}] An answer to: {first_user[:60]}"


def serve_forever(port_queue, delay: float = 0.0) -> None:  # pragma: no cover - benchmark helper
    """Run a server in this process (for a separate benchmark process); sends the port back."""

    async def main():
        srv = FakeOpenAIServer(delay=delay, record=False)
        srv._server = await asyncio.start_server(srv._handle, "127.0.0.1", 0, backlog=4096)
        port_queue.put(srv._server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(main())
