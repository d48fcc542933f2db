#!/usr/bin/env bash
# Install prnf with its dev extras and run the test suite (slow paper-size runs excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -m "not slow" --doctest-modules --durations=30 prnf_core tests "$@"
