#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite; `--fast` runs the fast tier only (no slow, no llm tests).
# Other arguments go to pytest, e.g. `bash scripts/test.sh --fast tests/test_guard.py -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--fast" ]; then
  shift
  set -- -m "not slow and not llm" "$@"
  # Session models made by an earlier fast run are reused while what makes them is unchanged (tests/conftest.py).
  export GUARD_TEST_REUSE_MODELS=1
fi
exec .venv/bin/python -m pytest "$@"
