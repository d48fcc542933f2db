#!/usr/bin/env bash
# Create ./.venv (if missing) and install prnf into it, torch's CPU wheel first.
# Usage: scripts/install.sh [extras]   e.g. scripts/install.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${PRNF_TORCH_SPEC:-torch==2.13.0}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch on its own first: the range in pyproject.toml then admits it instead of pulling a
# multi-GB CUDA build (on GPU machines set PRNF_TORCH_SPEC, e.g. "torch==2.13.0").
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "$TORCH_SPEC"
fi
target="."
if [ -n "${1:-}" ]; then target=".[$1]"; fi
.venv/bin/python -m pip install -q -e "$target"
.venv/bin/python -c "import prnf_core, torch; print('prnf', prnf_core.__version__, '| torch', torch.__version__)"
