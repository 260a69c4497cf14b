#!/usr/bin/env bash
# Set up (if needed) and run the main job: build the demo guard bundle (cached in .cache/) and check texts with it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python examples/quickstart.py "$@"
