#!/usr/bin/env bash
# Install prnf with its dev extras and run the test suite (slow paper-size runs excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh dev
.venv/bin/ruff check .
# Two pytest-xdist workers: whole modules to a worker, the server-bound ones first (see
# pytest_xdist_make_scheduler in tests/conftest.py); PRNF_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -n "${PRNF_TEST_WORKERS:-2}" -m "not slow" --doctest-modules \
  --durations=30 prnf_core tests "$@"
