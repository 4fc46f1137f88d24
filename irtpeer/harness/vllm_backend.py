"""vLLM's offline engine (``pip install 'irtpeer[vllm]'``; imported only when used).

All prompts of a chunk go to one ``LLM.chat`` call (vLLM schedules them together; the rubric text
comes first in every judge prompt so prefix caching reuses it). Judge calls carry their JSON schema
as ``SamplingParams(structured_outputs=StructuredOutputsParams(json=schema))`` — the ``guided_*``
parameters were removed in vLLM 0.12. Replies are validated anyway.

**A request vLLM rejects fails alone.** ``LLM.chat`` validates every prompt of a batch before it
generates anything (prompt longer than ``max_model_len``, a JSON schema the grammar backend
cannot compile, ...) and raises one ``ValueError`` for the whole batch, after aborting the prompts
it had already added. So on a ``ValueError`` the batch is split in halves and each half is
submitted again, recursively: the rejected prompts end as :class:`CallFailed` (``vllm_rejected``,
with vLLM's message as the reason; the harness records them as failed calls, retried by a rerun)
and every other prompt is generated, in about ``2 * log2(batch)`` extra submissions per rejected
prompt instead of one engine call per prompt.

**No free whitespace in structured JSON.** A weak or random model under a JSON grammar that allows
whitespace can emit spaces or newlines until ``max_tokens`` and so never close the object. vLLM
reads ``disable_any_whitespace`` from the *engine's* ``structured_outputs_config`` (its xgrammar
and guidance backends ignore the per-request field of the same name, and the engine refuses it
with the ``auto`` backend), so the engine is created with ``structured_outputs_config =
{"backend": "xgrammar", "disable_any_whitespace": True}`` unless the user's ``engine`` settings say
otherwise; the per-request ``StructuredOutputsParams(disable_any_whitespace=True)`` is set too, for
the versions and backends that read it.

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
# grammar backends of vLLM that can forbid free whitespace (StructuredOutputsConfig refuses others)
_NO_WHITESPACE_BACKENDS = ("xgrammar", "guidance")


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
            "json_whitespace": self.json_whitespace_allowed(),
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
                _ENGINES[self.model] = self._vllm().LLM(model=self.model, **self.load_kwargs())
            self._llm = _ENGINES[self.model]
        return self._llm

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``vllm.LLM``: the user's ``engine`` settings, with structured
        outputs set to forbid free whitespace (see the module docstring) unless the user chose a
        grammar backend that cannot, or set ``disable_any_whitespace`` themselves."""
        kw = dict(self.engine_kwargs)
        so = kw.get("structured_outputs_config")
        if not self.structured or not (so is None or isinstance(so, dict)):
            return kw
        so = {"backend": "xgrammar", **(so or {})}
        if so["backend"] in _NO_WHITESPACE_BACKENDS:
            so.setdefault("disable_any_whitespace", True)
        kw["structured_outputs_config"] = so
        return kw

    def json_whitespace_allowed(self) -> bool | None:
        """Whether the engine lets structured JSON contain free whitespace (None: not structured,
        or a config object given by the user). Part of the call key: it changes the replies."""
        if not self.structured:
            return None
        so = self.load_kwargs().get("structured_outputs_config")
        if not isinstance(so, dict):
            return None
        return not so.get("disable_any_whitespace", False)

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
            kw["structured_outputs"] = self._structured_cls()(
                json=req.schema, disable_any_whitespace=not self.json_whitespace_allowed()
            )
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
        # a ConfigError (also a ValueError) from loading is the user's to see, not a request's
        llm = self._engine()
        results: list[ChatResult | CallFailed | None] = [None] * len(requests)
        self._submit(llm, requests, list(range(len(requests))), results, stats)
        return results  # type: ignore[return-value]

    def _params_or_failure(self, req: ChatRequest):
        try:
            return self.sampling_params(req)
        except ValueError as exc:  # e.g. vLLM's own checks of a sampling setting or a schema
            return CallFailed("vllm_rejected", f"vLLM rejected the request's settings: {exc}"[:500])

    def _submit(self, llm, requests, idx: list[int], results: list, stats) -> None:
        """Generate ``requests[i] for i in idx`` in one ``LLM.chat`` call; when vLLM rejects the
        batch (``ValueError``, raised before anything is generated), split it and retry the halves
        so that only the rejected prompts fail."""
        import time

        # fresh parameters for every submission: vLLM writes into them (output kind, backend)
        params = {i: self._params_or_failure(requests[i]) for i in idx}
        for i in [i for i in idx if isinstance(params[i], CallFailed)]:
            results[i] = params[i]
            stats.add("failed_vllm_rejected")
        idx = [i for i in idx if not isinstance(params[i], CallFailed)]
        if not idx:
            return
        stats.add("requests_sent", len(idx))
        t0 = time.perf_counter()
        try:
            outs = llm.chat(
                [requests[i].message_dicts() for i in idx],
                sampling_params=[params[i] for i in idx],
                use_tqdm=False,
            )
        except ValueError as exc:
            if len(idx) == 1:
                results[idx[0]] = CallFailed(
                    "vllm_rejected", f"vLLM rejected the prompt: {exc}"[:500]
                )
                stats.add("failed_vllm_rejected")
                return
            stats.add("retry_vllm_rejected", len(idx))  # resubmitted, in halves
            half = len(idx) // 2
            self._submit(llm, requests, idx[:half], results, stats)
            self._submit(llm, requests, idx[half:], results, stats)
            return
        dt = (time.perf_counter() - t0) / len(idx)
        if len(outs) != len(idx):
            for i in idx:
                results[i] = CallFailed(
                    "engine", f"vLLM returned {len(outs)} outputs for {len(idx)} prompts"
                )
            return
        for i, out in zip(idx, outs):
            r = self.parse_output(out)
            if isinstance(r, ChatResult):
                r.latency_s = dt
            results[i] = r
