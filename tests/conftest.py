import os

import pytest
from irtpeer_paths import SHARED_DATA

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")



@pytest.fixture
def shared_data():
    """The real datasets beside the checkout (../shared/data); skip where that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not available: {SHARED_DATA} is absent (CI has it beside the checkout)")
    return SHARED_DATA
