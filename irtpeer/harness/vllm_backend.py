"""vLLM's offline engine (``pip install 'irtpeer[vllm]'``; imported only when used).

All prompts of a chunk go to one ``LLM.chat`` call (vLLM schedules them together; the rubric text
comes first in every judge prompt so prefix caching reuses it). Judge calls carry their JSON schema
as ``SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))`` — the ``guided_*``
parameters were removed in vLLM 0.12. Replies are validated anyway.

One engine per process: deleting an ``LLM`` does not reliably free GPU memory, so a second model
in the same process is refused with a hint (run another process, or serve it with ``vllm serve``
and use the OpenAI-compatible backend).

The engine and the vLLM module can be injected (``llm=``, ``vllm_module=``): that is how request
building and output parsing are tested without vLLM or a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from .backend import Backend, ChatRequest, ChatResult
from .errors import CallFailed, ConfigError

__all__ = ["VLLMBackend"]

_ENGINES: dict[str, Any] = {}  # model -> LLM, one per process


class VLLMBackend(Backend):
    kind = "vllm"
    batched = True

    def __init__(
        self,
        model: str,
        *,
        engine_kwargs: dict[str, Any] | None = None,
        structured: bool = True,
        batch_size: int = 1024,
        llm: Any = None,
        vllm_module: Any = None,
    ):
        self.model = str(model)
        self.engine_kwargs = dict(engine_kwargs or {})
        self.structured = bool(structured)
        self.batch_size = int(batch_size)
        self.concurrency = 1
        self._llm = llm
        self._mod = vllm_module
        if llm is None and vllm_module is None and importlib.util.find_spec("vllm") is None:
            # say so before any stage runs, not in a worker thread after other calls were paid for
            from .._errors import MissingDependencyError

            raise MissingDependencyError(
                f"--backend vllm (model {self.model!r}) needs vLLM and a GPU: install it with "
                "`pip install 'irtpeer[vllm]'`, or serve the model with `vllm serve` and use "
                "--backend openai --base-url http://HOST:PORT/v1"
            )

    def identity(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "structured": self.structured,
            "engine": {
                k: v
                for k, v in sorted(self.engine_kwargs.items())
                if k in ("max_model_len", "dtype", "quantization", "revision")
            },
        }

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "engine_kwargs": self.engine_kwargs,
            "batch_size": self.batch_size,
        }

    # ---- the vLLM boundary -----------------------------------------------------------------
    def _vllm(self):
        if self._mod is None:
            from .._errors import require

            self._mod = require("vllm", "vllm")
        return self._mod

    def _structured_cls(self):
        v = self._vllm()
        cls = getattr(v, "StructuredOutputsParams", None)
        if cls is None:
            cls = importlib.import_module("vllm.sampling_params").StructuredOutputsParams
        return cls

    def _engine(self):
        if self._llm is None:
            other = [m for m in _ENGINES if m != self.model]
            if other:
                raise ConfigError(
                    f"a vLLM engine for {other[0]!r} is already loaded in this process and vLLM does not "
                    f"reliably free GPU memory; run {self.model!r} in another process, or serve it with "
                    "`vllm serve` and use --backend openai"
                )
            if self.model not in _ENGINES:
                _ENGINES[self.model] = self._vllm().LLM(model=self.model, **self.engine_kwargs)
            self._llm = _ENGINES[self.model]
        return self._llm

    # ---- requests and results --------------------------------------------------------------
    def sampling_params(self, req: ChatRequest):
        s = req.sampling
        kw: dict[str, Any] = {
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.seed is not None:
            kw["seed"] = s.seed
        if req.schema is not None and self.structured:
            kw["structured_outputs"] = self._structured_cls()(json=req.schema)
        return self._vllm().SamplingParams(**kw)

    @staticmethod
    def parse_output(out: Any) -> ChatResult | CallFailed:
        comps = getattr(out, "outputs", None) or []
        if not comps:
            return CallFailed("empty_output", "vLLM returned no completion for this prompt")
        c = comps[0]
        finish = getattr(c, "finish_reason", None)
        return ChatResult(
            text=getattr(c, "text", None),
            finish_reason=str(finish) if finish is not None else None,
            prompt_tokens=len(getattr(out, "prompt_token_ids", None) or []) or None,
            completion_tokens=len(getattr(c, "token_ids", None) or []),
        )

    def chat_batch(self, requests: list[ChatRequest], stats) -> list[ChatResult | CallFailed]:
        import time

        llm = self._engine()
        convs = [r.message_dicts() for r in requests]
        params = [self.sampling_params(r) for r in requests]
        stats.add("requests_sent", len(requests))
        t0 = time.perf_counter()
        outs = llm.chat(convs, sampling_params=params, use_tqdm=False)
        dt = (time.perf_counter() - t0) / max(1, len(requests))
        if len(outs) != len(requests):
            return [
                CallFailed(
                    "engine", f"vLLM returned {len(outs)} outputs for {len(requests)} prompts"
                )
            ] * len(requests)
        results = [self.parse_output(o) for o in outs]
        for r in results:
            if isinstance(r, ChatResult):
                r.latency_s = dt
        return results
