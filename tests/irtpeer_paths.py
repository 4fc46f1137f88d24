"""Paths used by the tests (a uniquely named module: tests/harness has a conftest.py too)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
REFS = TESTS / "references"
DATA = TESTS / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
