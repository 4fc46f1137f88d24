#!/usr/bin/env bash
# Install everything the test suite needs, then run the whole suite.
# The CPU build of torch goes first so that nothing pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]" -e "./lagdpo_plugin[dev]"
python -m pytest -q "$@"
