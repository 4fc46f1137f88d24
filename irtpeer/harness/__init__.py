"""The judge harness: evaluated models answer questions, judge LLMs score the answers on rubric
items, and the result is the ratings table of DESIGN §2. See docs/harness.md.

Modules (one concept each): :mod:`.rubrics` (rubric files, prompts, reply validation),
:mod:`.backend` (the backend interface and retry policy), :mod:`.openai_backend`,
:mod:`.vllm_backend`, :mod:`.transformers_backend`, :mod:`.endpoints` (backends from settings),
:mod:`.store` (call keys and the append-only store), :mod:`.executor` (running calls),
:mod:`.answer` and :mod:`.judge` (the two stages), :mod:`.config` (``irtpeer run``),
:mod:`.manifest` (counts, cost, progress), :mod:`.tasks` (OOD checks), :mod:`.errors`,
:mod:`.schema` (typed settings, validated up front).
"""

from .answer import answer_questions
from .backend import Backend, ChatRequest, ChatResult, RetryPolicy, Sampling
from .errors import CallFailed, ConfigError, EndpointFatalError, HarnessError, RubricError
from .judge import RATING_COLUMNS, judge_answers
from .rubrics import Rubric, builtin_rubrics, load_rubric, validate_reply
from .store import CallStore, call_key

__all__ = [
    "RATING_COLUMNS",
    "Backend",
    "CallFailed",
    "CallStore",
    "ChatRequest",
    "ChatResult",
    "ConfigError",
    "EndpointFatalError",
    "HarnessError",
    "RetryPolicy",
    "Rubric",
    "RubricError",
    "Sampling",
    "answer_questions",
    "builtin_rubrics",
    "call_key",
    "judge_answers",
    "load_rubric",
    "validate_reply",
]
