#!/usr/bin/env bash
# Creates .venv (if missing) and installs trl-lead with its test dependencies.
# torch goes first, pinned, so that pip takes the CPU wheel where one is available locally instead of
# pulling a multi-GB CUDA build through the plain `torch>=` requirement. Override with TORCH_SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "${TORCH_SPEC:-torch==2.13.0}" || "$VENV/bin/python" -m pip install -q "torch>=2.4"
"$VENV/bin/python" -m pip install -q -e ".[test]"
