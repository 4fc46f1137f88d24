"""Helpers the harness tests import (a uniquely named module: two conftest.py files exist under
tests/, and `from conftest import ...` would depend on which one pytest loaded first)."""

from __future__ import annotations

import pandas as pd

TEST_KEY = "sk-irtpeer-TEST-9f8e7d6c5b4a3210zyxw"


def make_answers(n_questions: int = 4, models=("m1", "m2"), dimensions=None) -> pd.DataFrame:
    rows = []
    for m in models:
        for q in range(n_questions):
            rows.append(
                {
                    "model": m,
                    "question": f"q{q}",
                    "prompt": f"PROMPT-Q{q} please help",
                    "answer": f"ANSWER-{m}-Q{q}",
                    **({"dimensions": dimensions} if dimensions is not None else {}),
                }
            )
    return pd.DataFrame(rows)


def run_cli(argv: list[str]) -> int:
    from irtpeer.cli import main

    return main([str(a) for a in argv])
