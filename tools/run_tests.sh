#!/usr/bin/env bash
# The README's test command: set up the pinned environment (idempotent), then run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
