"""Any OpenAI-compatible chat endpoint (OpenAI, ``vllm serve``, llama.cpp, TGI, ...) through the
``openai`` package's async client.

* The client's own retries are off (``max_retries=0``): this module retries, so every retry is
  counted in the run manifest and ``Retry-After`` / ``retry-after-ms`` is honoured exactly.
* Transient (retried with exponential backoff and jitter): 429 (rate limit), 408, 409, 5xx,
  timeouts, connection errors, a 200 whose body is not JSON.
* Fatal for the run (:class:`EndpointFatalError`): 401, 403, 404 (unknown model), 429 with
  ``insufficient_quota`` (the client would retry it; paying users want the run to stop).
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

__all__ = ["OpenAIBackend"]


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
                base_url=self.base_url, api_key=self._key, max_retries=0, timeout=self.timeout
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
        import openai

        client = self._client()
        kwargs = self._kwargs(request)
        where = f"endpoint {self.base_url} (model {self.model})"
        attempt = 0
        async with self._sem:
            while True:
                t0 = time.perf_counter()
                stats.add("requests_sent")
                retry_after = None
                try:
                    resp = await client.chat.completions.create(**kwargs)
                except openai.RateLimitError as exc:
                    if _is_quota(exc):
                        stats.add("fatal_quota")
                        raise EndpointFatalError(
                            f"{where} says the quota is exhausted (HTTP 429 insufficient_quota): "
                            f"{redact(exc)}; add credit or use another key, then rerun the same command"
                        ) from None
                    kind, retry_after = "http_429", _retry_after(exc.response.headers)
                    detail = redact(exc)
                except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                    stats.add(f"fatal_http_{exc.status_code}")
                    raise EndpointFatalError(
                        f"{where} refused the API key from ${self.api_key_env} (HTTP {exc.status_code}): "
                        f"{redact(exc)}; check the key in {self.api_key_env} (--api-key-env), then rerun"
                    ) from None
                except openai.NotFoundError as exc:
                    stats.add("fatal_http_404")
                    raise EndpointFatalError(
                        f"{where} answered HTTP 404: {redact(exc)}; check --base-url (it usually ends "
                        "in /v1) and the model name the server lists at /v1/models"
                    ) from None
                except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                    stats.add(f"failed_http_{exc.status_code}")
                    raise CallFailed(f"http_{exc.status_code}", redact(exc)) from None
                except openai.APITimeoutError as exc:
                    kind, detail = "timeout", f"no reply within {self.timeout} s ({redact(exc)})"
                except openai.APIConnectionError as exc:
                    kind, detail = "connection", redact(exc)
                except openai.APIStatusError as exc:
                    code = exc.status_code
                    if code >= 500 or code in (408, 409):
                        kind, retry_after, detail = (
                            f"http_{code}",
                            _retry_after(exc.response.headers),
                            redact(exc),
                        )
                    else:
                        stats.add(f"failed_http_{code}")
                        raise CallFailed(f"http_{code}", redact(exc)) from None
                except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                    kind, detail = "bad_body", f"reply body is not valid JSON ({redact(exc)[:200]})"
                else:
                    latency = time.perf_counter() - t0
                    if not resp.choices:
                        kind, detail = "bad_body", "reply has no choices"
                    else:
                        ch = resp.choices[0]
                        usage = resp.usage
                        return ChatResult(
                            text=ch.message.content,
                            finish_reason=ch.finish_reason,
                            prompt_tokens=getattr(usage, "prompt_tokens", None) if usage else None,
                            completion_tokens=getattr(usage, "completion_tokens", None)
                            if usage
                            else None,
                            latency_s=latency,
                            retries=attempt,
                        )
                if attempt >= self.retry.max_retries:
                    stats.add(f"failed_{kind}")
                    raise CallFailed(kind, f"{kind} after {attempt + 1} attempts: {detail}")
                stats.add(f"retry_{kind}")
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
                attempt += 1
