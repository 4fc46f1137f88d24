"""Any OpenAI-compatible chat endpoint (OpenAI, ``vllm serve``, llama.cpp, TGI, ...) through the
``openai`` package's async client.

* The client's own retries are off (``max_retries=0``): this module retries, so every retry is
  counted in the run manifest and ``Retry-After`` / ``retry-after-ms`` is honoured exactly.
* Transient (retried with exponential backoff and jitter): 429 (rate limit), 408, 409, 5xx,
  timeouts, connection errors, a 200 whose body is not JSON.
* Fatal for the run (:class:`EndpointFatalError`): 401, 403, 404 (unknown model), 429 with
  ``insufficient_quota`` (the client would retry it; paying users want the run to stop), and a
  connection that cannot be made before the endpoint has answered once (nothing listens at the
  URL: ``CANARY_RETRIES`` quick retries, then one line naming the URL). Once the endpoint has
  answered, connection errors are transient like the others.
* Fatal for the call (:class:`CallFailed`, recorded as a null score): 400, 422, other 4xx, and
  transient errors once retries are exhausted.
* A semaphore bounds the requests in flight per endpoint (the client itself does not); judges
  served by the same base URL share it.
* The API key is read from an environment variable, registered with :func:`errors.redact`, and
  never stored, logged or put in an exception message.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import time
from typing import Any

from .backend import Backend, ChatRequest, ChatResult, RetryPolicy
from .errors import CallFailed, ConfigError, EndpointFatalError, redact, register_secret

__all__ = ["CANARY_RETRIES", "OpenAIBackend"]

#: Retries of a connection that fails before the endpoint has answered once (then the run stops).
CANARY_RETRIES = 2
CANARY_MAX_DELAY = 1.0
#: Seconds to wait for the TCP connection (the request itself may take ``timeout``).
CONNECT_TIMEOUT = 10.0


def _retry_after(headers) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra is None:
        return None
    try:
        return float(ra)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _is_quota(exc) -> bool:
    code = getattr(exc, "code", None)
    body = getattr(exc, "body", None)
    if code == "insufficient_quota":
        return True
    if isinstance(body, dict) and (
        body.get("type") == "insufficient_quota" or body.get("code") == "insufficient_quota"
    ):
        return True
    return "insufficient_quota" in str(exc)


class OpenAIBackend(Backend):
    kind = "openai"
    batched = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        structured: bool = True,
        extra_body: dict[str, Any] | None = None,
        price_input_per_mtok: float | None = None,
        price_output_per_mtok: float | None = None,
    ):
        if not base_url:
            raise ConfigError(
                "--base-url is empty; give the endpoint, e.g. http://127.0.0.1:8000/v1"
            )
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(
                f"the environment variable {api_key_env} (--api-key-env) is not set; export the API key "
                "there (for a local server without authentication any value works, e.g. EMPTY)"
            )
        register_secret(key)
        self._key = key
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.structured = bool(structured)
        self.extra_body = dict(extra_body or {})
        self.price_input_per_mtok = price_input_per_mtok
        self.price_output_per_mtok = price_output_per_mtok
        self._client_obj = None
        self._sem: asyncio.Semaphore | None = None
        self._reached = False  # has the server answered anything yet (see _canary_retry)

    # ---- identity --------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        ident = {
            "kind": self.kind,
            "base_url": self.base_url,
            "model": self.model,
            "structured": self.structured,
        }
        if self.extra_body:
            ident["extra_body"] = self.extra_body
        return ident

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "api_key_env": self.api_key_env,  # the name only, never the value
            "concurrency": self.concurrency,
            "timeout_s": self.timeout,
            "max_retries": self.retry.max_retries,
            "backoff_base_s": self.retry.base_delay,
            "backoff_max_s": self.retry.max_delay,
            "price_input_per_mtok": self.price_input_per_mtok,
            "price_output_per_mtok": self.price_output_per_mtok,
        }

    # ---- client ----------------------------------------------------------------------------
    def _client(self):
        if self._client_obj is None:
            import openai

            self._client_obj = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._key,
                max_retries=0,
                timeout=openai.Timeout(self.timeout, connect=min(self.timeout, CONNECT_TIMEOUT)),
            )
            if self._sem is None:
                self._sem = asyncio.Semaphore(self.concurrency)
        return self._client_obj

    @property
    def limit_key(self) -> str:
        """Backends with the same key share one concurrency limit (one server, several models)."""
        return self.base_url

    def bind_limiter(self, sem: asyncio.Semaphore) -> None:
        self._sem = sem

    async def aclose(self) -> None:
        if self._client_obj is not None:
            await self._client_obj.close()
            self._client_obj = None

    def _kwargs(self, req: ChatRequest) -> dict[str, Any]:
        s = req.sampling
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": req.message_dicts(),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.seed is not None:
            kw["seed"] = s.seed
        if req.schema is not None and self.structured:
            kw["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": req.schema_name, "schema": req.schema, "strict": True},
            }
        if self.extra_body:
            kw["extra_body"] = self.extra_body
        return kw

    # ---- one call with retries -------------------------------------------------------------
    async def chat(self, request: ChatRequest, stats) -> ChatResult:
        client = self._client()
        kwargs = self._kwargs(request)
        attempt = 0
        async with self._sem:
            while True:
                t0 = time.perf_counter()
                stats.add("requests_sent")
                retry_after, unreachable = None, False
                try:
                    resp = await client.chat.completions.create(**kwargs)
                except Exception as exc:  # noqa: BLE001 - sorted by _classify; others re-raised
                    kind, detail, retry_after, unreachable = self._classify(exc, stats)
                else:
                    self._reached = True
                    if resp.choices:
                        return _result(resp, time.perf_counter() - t0, attempt)
                    kind, detail = "bad_body", "reply has no choices"
                if unreachable and not self._reached:
                    await self._canary_retry(attempt, detail, stats)
                    attempt += 1
                    continue
                if attempt >= self.retry.max_retries:
                    stats.add(f"failed_{kind}")
                    raise CallFailed(kind, f"{kind} after {attempt + 1} attempts: {detail}")
                stats.add(f"retry_{kind}")
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
                attempt += 1

    async def _canary_retry(self, attempt: int, detail: str, stats) -> None:
        """Nothing has answered at this URL yet and the connection itself failed: a wrong
        --base-url or a server that is not running. Retry briefly, then stop the run with one
        line naming the URL instead of retrying every call of the run."""
        if attempt >= min(self.retry.max_retries, CANARY_RETRIES):
            stats.add("fatal_connection")
            raise EndpointFatalError(
                f"cannot connect to {self.base_url} (model {self.model}) after {attempt + 1} "
                f"attempt(s): {detail}; check that the server is running and that --base-url "
                "(base_url) is right, then rerun the same command"
            )
        stats.add("retry_connection")
        await asyncio.sleep(min(self.retry.delay(attempt), CANARY_MAX_DELAY))

    def _classify(self, exc: Exception, stats) -> tuple[str, str, float | None, bool]:
        """``(kind, detail, retry_after, unreachable)`` of a transient error; raises
        :class:`EndpointFatalError` / :class:`CallFailed` for the others."""
        import openai

        where = f"endpoint {self.base_url} (model {self.model})"
        if isinstance(exc, openai.APIConnectionError):  # timeouts included
            unreachable = _connect_failed(exc)
            self._reached = self._reached or not unreachable
            cause = redact(exc.__cause__ or exc).replace("\n", " ")
            if isinstance(exc, openai.APITimeoutError) and not unreachable:
                return "timeout", f"no reply within {self.timeout} s ({cause})", None, False
            return "connection", cause or redact(exc), None, unreachable
        if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
            self._reached = True
            return "bad_body", f"reply body is not valid JSON ({redact(exc)[:200]})", None, False
        if not isinstance(exc, openai.APIStatusError):
            raise exc
        self._reached = True
        code = exc.status_code
        if isinstance(exc, openai.RateLimitError) and _is_quota(exc):
            stats.add("fatal_quota")
            raise EndpointFatalError(
                f"{where} says the quota is exhausted (HTTP 429 insufficient_quota): "
                f"{redact(exc)}; add credit or use another key, then rerun the same command"
            ) from None
        if code in (401, 403):
            stats.add(f"fatal_http_{code}")
            raise EndpointFatalError(
                f"{where} refused the API key from ${self.api_key_env} (HTTP {code}): "
                f"{redact(exc)}; check the key in {self.api_key_env} (--api-key-env), then rerun"
            ) from None
        if code == 404:
            stats.add("fatal_http_404")
            raise EndpointFatalError(
                f"{where} answered HTTP 404: {redact(exc)}; check --base-url (it usually ends "
                "in /v1) and the model name the server lists at /v1/models"
            ) from None
        if code == 429 or code >= 500 or code in (408, 409):
            return f"http_{code}", redact(exc), _retry_after(exc.response.headers), False
        stats.add(f"failed_http_{code}")
        raise CallFailed(f"http_{code}", redact(exc)) from None


def _connect_failed(exc: Exception) -> bool:
    """True when the TCP connection itself failed (refused, unroutable, DNS), as opposed to a
    server that accepted the connection and then was slow or hung up."""
    import openai

    cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else None
    if isinstance(exc, openai.APITimeoutError):
        return cause == "ConnectTimeout"
    return cause in (None, "ConnectError", "ConnectTimeout")


def _result(resp, latency: float, attempt: int) -> ChatResult:
    ch = resp.choices[0]
    usage = resp.usage
    return ChatResult(
        text=ch.message.content,
        finish_reason=ch.finish_reason,
        prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
        completion_tokens=getattr(usage, "completion_tokens", None) if usage else None,
        latency_s=latency,
        retries=attempt,
    )
