#!/usr/bin/env bash
# One-time set-up (idempotent): a virtual environment in .venv with foundry3d.
#   bash scripts/setup.sh         the package (enough for every foundry3d command)
#   bash scripts/setup.sh --dev   plus the test tools and the ONNX export extra
# torch is installed first and pinned to 2.13.0, so that on machines that carry the CPU wheel
# (PIP_FIND_LINKS) pip takes it instead of downloading CUDA builds; the package itself only asks
# for an ordinary torch range.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
EXTRA=""
if [ "${1:-}" = "--dev" ]; then EXTRA="[dev]"; fi
.venv/bin/python -m pip install --quiet -e ".${EXTRA}"
.venv/bin/python -c "import foundry3d, torch; print(f'foundry3d {foundry3d.__version__} ready (torch {torch.__version__})')"
