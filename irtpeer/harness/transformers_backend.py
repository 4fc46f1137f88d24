"""Local generation with ``transformers`` (small models on CPU, or a checkpoint that the training
plug-in wrote). Batched: prompts are rendered with the tokenizer's chat template, left-padded and
generated together. No constrained decoding: judge replies are validated (and re-asked) as always.
"""

from __future__ import annotations

import os
from typing import Any

from .backend import Backend, ChatRequest, ChatResult
from .errors import CallFailed, ConfigError

__all__ = ["TransformersBackend"]


class TransformersBackend(Backend):
    kind = "transformers"
    batched = True

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        device: str = "cpu",
        dtype: str | None = None,
        trust_remote_code: bool = False,
    ):
        self.model = str(model)
        self.batch_size = int(batch_size)
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.concurrency = 1
        self._tok = None
        self._lm = None
        import importlib.util

        if importlib.util.find_spec("transformers") is None:  # say so before any stage runs
            from .._errors import MissingDependencyError

            raise MissingDependencyError(
                f"--backend transformers (model {self.model!r}) needs the transformers package: "
                "install it with `pip install 'irtpeer[local]'`"
            )

    def identity(self) -> dict[str, Any]:
        path = os.path.abspath(self.model) if os.path.isdir(self.model) else self.model
        return {"kind": self.kind, "model": path}

    def describe(self) -> dict[str, Any]:
        return {
            **self.identity(),
            "batch_size": self.batch_size,
            "device": self.device,
            "dtype": self.dtype,
        }

    def _load(self):
        if self._lm is None:
            from .._errors import require

            transformers = require("transformers", "local")
            torch = require("torch", "local")
            try:
                tok = transformers.AutoTokenizer.from_pretrained(
                    self.model, trust_remote_code=self.trust_remote_code
                )
                kw = {"trust_remote_code": self.trust_remote_code}
                if self.dtype:
                    kw["dtype"] = getattr(torch, self.dtype)
                lm = transformers.AutoModelForCausalLM.from_pretrained(self.model, **kw).to(
                    self.device
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot load the transformers model {self.model!r}: {exc}"
                ) from None
            lm.eval()
            tok.padding_side = "left"
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            if getattr(tok, "chat_template", None) is None:
                raise ConfigError(
                    f"the tokenizer of {self.model!r} has no chat template; save one with the tokenizer "
                    "(tokenizer.chat_template = ...) so that chat messages can be rendered"
                )
            self._tok, self._lm = tok, lm
        return self._tok, self._lm

    def chat_batch(self, requests: list[ChatRequest], stats) -> list[ChatResult | CallFailed]:
        import time

        import torch

        tok, lm = self._load()
        results: list[ChatResult | CallFailed | None] = [None] * len(requests)
        # generate together only requests with the same sampling settings
        groups: dict[Any, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling, []).append(i)
        for sampling, idx in groups.items():
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                texts = [
                    tok.apply_chat_template(
                        requests[i].message_dicts(), tokenize=False, add_generation_prompt=True
                    )
                    for i in chunk
                ]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(
                    self.device
                )
                gen: dict[str, Any] = {
                    "max_new_tokens": sampling.max_tokens,
                    "pad_token_id": tok.pad_token_id,
                }
                if sampling.temperature > 0:
                    gen.update(
                        do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p
                    )
                else:
                    gen.update(do_sample=False)
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                t0 = time.perf_counter()
                stats.add("requests_sent", len(chunk))
                try:
                    with torch.no_grad():
                        out = lm.generate(**enc, **gen)
                except RuntimeError as exc:  # e.g. out of memory: this chunk fails, the run goes on
                    for i in chunk:
                        results[i] = CallFailed("generate", str(exc)[:300])
                    continue
                latency = time.perf_counter() - t0
                n_in = enc["input_ids"].shape[1]
                for row, i in enumerate(chunk):
                    new = out[row, n_in:]
                    ids = new.tolist()
                    eos = tok.eos_token_id
                    n_new = len(ids)
                    while n_new and ids[n_new - 1] == tok.pad_token_id and tok.pad_token_id != eos:
                        n_new -= 1
                    hit_eos = eos is not None and eos in ids
                    if hit_eos:
                        n_new = ids.index(eos) + 1
                    text = tok.decode(ids[:n_new], skip_special_tokens=True)
                    results[i] = ChatResult(
                        text=text,
                        finish_reason="stop" if hit_eos else "length",
                        prompt_tokens=int(enc["attention_mask"][row].sum()),
                        completion_tokens=n_new,
                        latency_s=latency / len(chunk),
                    )
        return results  # type: ignore[return-value]
