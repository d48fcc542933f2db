#!/usr/bin/env bash
# Install prnf and run the main job on embedded defaults (no server to start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/prnf run "$@"
