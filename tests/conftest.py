import importlib.util
import os
import shutil

import pytest
from irtpeer_paths import SHARED_DATA

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

#: What tests skip without: the `bayes` extra, the plug-in and TRL, the browser, the real
#: datasets. Outside CI a skip with its reason is right; in CI (`CI` set, as `.ci/run` runs)
#: none of it may be missing, so a missing piece stops the run instead of passing it untested.
_CI_NEEDS = ("pymc", "nutpie", "arviz", "pymc_extras", "playwright", "lagdpo", "trl")
_BROWSERS = ("chromium", "chromium-browser")  # the names report/report_browser.py looks for


def pytest_sessionstart(session):
    if not os.environ.get("CI"):
        return
    missing = [m for m in _CI_NEEDS if importlib.util.find_spec(m) is None]
    browsers = (os.environ.get("IRTPEER_CHROMIUM"), *_BROWSERS)
    if not any(b and shutil.which(b) for b in browsers):
        missing.append("Chromium (the report's browser tests)")
    if not SHARED_DATA.is_dir():
        missing.append(f"the real datasets ({SHARED_DATA})")
    if missing:
        pytest.exit(f"CI: {', '.join(missing)} missing, so their tests would skip: run "
                    f"scripts/test.sh (it installs them) with ../shared beside the checkout",
                    returncode=1)


@pytest.fixture
def shared_data():
    """The real datasets beside the checkout (../shared/data); skip where that folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not available: {SHARED_DATA} is absent (CI has it beside the checkout)")
    return SHARED_DATA
