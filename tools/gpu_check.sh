#!/usr/bin/env bash
# The GPU check of issue 12: R-50 AdaMixer and AdaMixer+LORS, 50 training iterations each in
# float32 and AMP on synthetic 800x1333 COCO-shaped data, float32 outputs CUDA vs CPU, s/iter,
# inference img/s, peak memory (tools/analysis_tools/gpu_check.py). Under 8 minutes on one GPU.
# Usage: bash tools/gpu_check.sh [extra gpu_check.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
exec "$PY" tools/analysis_tools/gpu_check.py --out "${OUT:-gpu_check.json}" "$@"
