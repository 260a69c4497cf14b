#!/usr/bin/env bash
# Idempotent set-up of .venv-triton, the environment that serves bundles on Triton (`python -m guard_sdk.triton
# serve`): nvidia-pytriton pins numpy<2, which the main .venv must not get, so the server side lives apart.
# Re-installs only when pyproject.toml or this script changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=.venv-triton
stamp=$venv/.guard-sdk-installed
want=$(cat pyproject.toml scripts/setup-triton.sh | sha256sum | cut -d" " -f1)
if [ ! -x "$venv/bin/python" ]; then
  "$PYTHON" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet -e ".[triton-server]"
  echo "$want" > "$stamp"
fi
