#!/usr/bin/env bash
# Install everything the test suite needs, then run the whole suite.
# The CPU build of torch goes first so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev,bayes]" -e "./lagdpo_plugin[dev]"
# The HTML report is tested in headless Chromium: Debian's chromium (+ driver), driven by the
# playwright python package from [dev]. Installed only when missing and apt-get can run (CI is
# root on Debian); elsewhere the browser tests skip and say why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "warning: could not install chromium; the browser tests of the report will skip" >&2
fi
python -m pytest -q "$@"
