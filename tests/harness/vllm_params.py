"""Stand-ins for vLLM's request parameter classes, shared by the fake `vllm` modules of the tests
(vLLM needs a GPU and is not installed here)."""


class SamplingParams:
    def __init__(self, **kw):
        self.kw = kw


class StructuredOutputsParams:
    def __init__(self, json=None, disable_any_whitespace=False):
        self.json, self.disable_any_whitespace = json, disable_any_whitespace
