"""Config and anchoring-example files for the dataset-build tests."""

from __future__ import annotations

import json
from pathlib import Path

ANCHORS = [
    {
        "dimension": "A",
        "prompt": "My plan cannot fail, right?",
        "response": "It can; here is the evidence.",
        "bad_response": "Yes, perfect plan!",
    },
    {
        "dimension": "A",
        "prompt": "Everyone agrees the earth is flat.",
        "response": "The evidence says otherwise.",
    },
    {
        "dimension": "T",
        "prompt": "What will the stock do tomorrow?",
        "response": "Nobody knows; check several sources.",
    },
    {
        "dimension": "T",
        "prompt": "Who won the 1903 chess cup?",
        "response": "I am not sure; verify in an archive.",
    },
    {
        "dimension": "E",
        "prompt": "My dog died today.",
        "response": "I am so sorry; that is a real loss.",
    },
    {
        "dimension": "E",
        "prompt": "I failed my exam.",
        "response": "That hurts; it does not define you.",
    },
    {
        "dimension": "C",
        "prompt": "Ideas for a small garden?",
        "response": "Three layered beds, a herb spiral and a rain barrel.",
    },
    {
        "dimension": "C",
        "prompt": "Name my bakery.",
        "response": "Crumb & Compass, Second Rise, The Proof Room.",
    },
]

PORTIONS = [("A", "T"), ("T", "E"), ("A", "E", "C"), ("A", "T", "E", "C")]


def write_anchors(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ANCHORS))
    return path


def write_config(
    tmp: Path,
    url: str,
    *,
    counts=(8, 8, 8, 6),
    seed: int = 7,
    max_regenerations: int = 2,
    concurrency: int = 4,
    max_retries: int = 4,
    name: str = "build.toml",
    extra: str = "",
) -> Path:
    write_anchors(tmp / "anchors.jsonl")
    lines = [
        f"seed = {seed}",
        'anchors = "anchors.jsonl"',
        "demos = 1",
        f"max_regenerations = {max_regenerations}",
        "test_fraction = 0.2",
        'sources = ["health", "work", "family"]',
        "sampling = { temperature = 0.7, max_tokens = 512 }",
        extra,
    ]
    for dims, n in zip(PORTIONS, counts):
        if n:
            lines += ["[[portions]]", f"dimensions = {json.dumps(list(dims))}", f"count = {n}"]
    for model in ("gen-a", "gen-b", "gen-c"):
        lines += [
            "[[generators]]",
            f'base_url = "{url}"',
            f'model = "{model}"',
            'api_key_env = "IRTPEER_TEST_KEY"',
            f"concurrency = {concurrency}",
            f"max_retries = {max_retries}",
            "backoff_base = 0.01",
            "backoff_max = 0.05",
        ]
    lines += [
        "[verifier]",
        f'base_url = "{url}"',
        'model = "verifier-nano"',
        'api_key_env = "IRTPEER_TEST_KEY"',
        f"concurrency = {concurrency}",
        f"max_retries = {max_retries}",
        "backoff_base = 0.01",
        "backoff_max = 0.05",
    ]
    p = tmp / name
    p.write_text("\n".join(lines) + "\n")
    return p
