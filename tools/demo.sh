#!/usr/bin/env bash
# The README's main job: set up the environment, generate the embedded digits dataset on first use,
# train the demo AdaMixer config on it and print the COCO AP table of the demo val split.
# Usage: bash tools/demo.sh [CONFIG] [extra tools/train.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup_env.sh
CONFIG=${1:-configs/demo/adamixer_tiny_1xb8-demo_digits.py}
shift || true
exec .venv/bin/python tools/train.py "$CONFIG" "$@"
