#!/usr/bin/env bash
# The GPU run of issue 17 as one command, from the repository root (gpu/run.py says what it does).
#   GPU machine: bash gpu/run.sh                      (carry [".gpu-kit"], timeout_s 600)
#   CPU check:   OUT=/tmp/gpu-out bash gpu/run.sh --dry-run
# PYTHON picks the interpreter (default: python3, as on the GPU machine; else python).
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
PY=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHONUNBUFFERED=1
exec "$PY" gpu/run.py "$@"
