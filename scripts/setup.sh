#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the runtime (CPU), the builder and the test tools.
# Re-installs only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.guard-sdk-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in the same install: unpinned, a dependency would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet -e ".[builder,cpu,dev]"
  echo "$want" > "$stamp"
fi
