#!/usr/bin/env bash
# Reproduce benchmarks/README.md: build the demo bundle if needed, then latency (with torch eager and the peers)
# and accuracy on ../shared/eval. Results land in benchmarks/results/. Pass BUNDLE/CHECKPOINT to measure another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BUNDLE=${BUNDLE:-.cache/demo/bundle}
CHECKPOINT=${CHECKPOINT:-.cache/demo/run/model}
[ -f "$BUNDLE/guard.json" ] || .venv/bin/python examples/quickstart.py > /dev/null
.venv/bin/python -m benchmarks.latency --bundle "$BUNDLE" --checkpoint "$CHECKPOINT" "$@"
.venv/bin/python -m benchmarks.accuracy --bundle "$BUNDLE" --score deepset_prompt_injections=injection
