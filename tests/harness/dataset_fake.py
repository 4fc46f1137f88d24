"""A scripted OpenAI-compatible server for the dataset-build tests: a real HTTP server on 127.0.0.1
(:class:`fake_openai.FakeOpenAIServer`, with its faults: 429, 500, malformed JSON, ...) whose replies
follow the stages of ``irtpeer dataset build``. Replies are a pure function of the request, so a
rerun gets the same replies.

The stage is read from the structured-output schema name; the instance travels in the scenario's
context as ``CTX[<id>|<active dims>|v<n>]`` (v2 after a regeneration). Planted faults:

* ``bad_attribution``: instance ids whose first scenario gets an attribution naming an inactive
  dimension;
* ``two_dim``: (instance id, dimension) pairs whose first negative fails two dimensions (it carries
  ``FAILS-TWO``, which the scripted verifier scores N2 = 0);
* ``always_bad``: instance ids whose negatives always fail two dimensions (they must be dropped);
* ``bad_scenario``: instance ids whose first scenario is ``INCONSISTENT`` (verifier V3 = 0);
* ``bad_reference``: instance ids whose first reference is ``FABRICATED`` (verifier R1 = 0).
"""

from __future__ import annotations

import hashlib
import json
import re

from fake_openai import FakeOpenAIServer

_CTX = re.compile(r"CTX\[([^|\]]+)\|([A-Z]+)\|v(\d+)\]")
WORDS = [
    "honest",
    "kind",
    "careful",
    "plan",
    "idea",
    "evidence",
    "feeling",
    "option",
    "risk",
    "check",
    "source",
    "step",
]


def _words(seed: str, n: int) -> str:
    h = hashlib.sha256(seed.encode()).digest()
    return " ".join(WORDS[b % len(WORDS)] for b in h[:n])


class DatasetFakeServer(FakeOpenAIServer):
    def __init__(
        self,
        *args,
        bad_attribution=(),
        two_dim=(),
        always_bad=(),
        bad_scenario=(),
        bad_reference=(),
        **kw,
    ):
        super().__init__(*args, **kw)
        self.bad_scenario = set(bad_scenario)
        self.bad_reference = set(bad_reference)
        self.bad_attribution = set(bad_attribution)
        self.two_dim = set(two_dim)
        self.always_bad = set(always_bad)

    def _content(self, body: dict) -> str:
        rf = body.get("response_format") or {}
        schema = (rf.get("json_schema") or {}).get("schema") or {}
        name = (rf.get("json_schema") or {}).get("name", "")
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        retry = "An earlier attempt was rejected" in user
        if name == "brainstorm":
            return self._brainstorm(user, schema, retry)
        m = _CTX.search(user)
        iid, dims, version = m.group(1), m.group(2), int(m.group(3))
        if name == "attribution":
            named = list(dims)
            if iid in self.bad_attribution and version == 1:
                named.append(next(d for d in "ATEC" if d not in dims))
            return json.dumps({"required_dimensions": named, "explanation": "scripted"})
        if name == "reference":
            n = 8 + int(hashlib.sha256(iid.encode()).hexdigest(), 16) % 12
            flaw = " FABRICATED" if iid in self.bad_reference and not retry else ""
            return json.dumps({"reference": f"REF for {iid}: " + _words(iid + "ref", n) + flaw})
        if name.startswith("negative"):
            d = re.search(r"Dimension to fail: (\w)", user).group(1)
            bad = iid in self.always_bad or ((iid, d) in self.two_dim and not retry)
            n = 8 + int(hashlib.sha256((iid + d).encode()).hexdigest(), 16) % 12
            text = f"NEG-{d} for {iid}: " + _words(iid + d, n) + (" FAILS-TWO" if bad else "")
            return json.dumps({"negative": text})
        if name.startswith("verify_"):
            keys = list(schema["properties"])
            fails = {"N2": "FAILS-TWO", "V3": "INCONSISTENT", "R1": "FABRICATED"}
            return json.dumps({k: 0 if fails.get(k, "\0") in user else 1 for k in keys})
        return super()._content(body)

    def _brainstorm(self, user: str, schema: dict, retry: bool) -> str:
        iid = re.search(r"instance (\S+) of", user).group(1)
        dims = "".join(schema["properties"]["rationale"]["properties"])
        fmt = re.search(r"Task format: (\w+)", user).group(1)
        src = re.search(r"Source category: (.+)", user).group(1).strip()
        j = int(iid.rsplit("-", 1)[1])
        return json.dumps(
            {
                "seed_scene": f"scene {j % 4}",
                "context": f"CTX[{iid}|{dims}|v{2 if retry else 1}] "
                + _words(iid + "ctx", 6)
                + (" INCONSISTENT" if iid in self.bad_scenario and not retry else ""),
                "trigger": "a scripted trigger",
                "prompt": f"PROMPT of {iid}: " + _words(iid + "prompt", 6),
                "task_format": fmt,
                "source_category": src,
                "rationale": {d: f"needs {d}" for d in dims},
            }
        )
