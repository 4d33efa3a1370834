#!/usr/bin/env bash
# Creates the project virtualenv (.venv) with the pinned CPU stack of requirements/constraints.txt.
# Idempotent: a stamp records the constraints it was built from, so a second call costs seconds.
# mmcv 2.1.0 has no wheel on PyPI; its sdist is built here with ops (about 10 min on 2 cores,
# cached by pip afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LORS_DET_VENV:-.venv}
PY=${PYTHON:-python3}
CONSTRAINTS=requirements/constraints.txt
STAMP="$VENV/.lors_det_stack"
want=$(cat "$CONSTRAINTS" requirements/runtime.txt requirements/tests.txt setup.py | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$CONSTRAINTS" "$@"; }

echo "[setup] torch + torchvision (pinned)"
pip_install torch torchvision
echo "[setup] build tools (mmcv's setup.py imports pkg_resources: setuptools<70)"
pip_install setuptools wheel numpy ninja
if ! "$VENV/bin/python" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  echo "[setup] mmcv 2.1.0 with ops from source (~10 min the first time, cached afterwards)"
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pip_install --no-build-isolation mmcv
fi
echo "[setup] mmengine, mmdet, timm and the rest"
pip_install -r requirements/runtime.txt -r requirements/tests.txt
pip_install --no-build-isolation --no-deps -e .
"$VENV/bin/python" -c "import torch, torchvision, mmcv, mmcv.ops, mmdet, mmengine, timm, lors_det; \
print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__, 'mmcv', mmcv.__version__, \
'mmdet', mmdet.__version__, 'mmengine', mmengine.__version__, 'timm', timm.__version__)"
echo "$want" > "$STAMP"
