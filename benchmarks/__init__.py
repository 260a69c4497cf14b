"""The benchmark scripts (README.md in this folder). Every script runs with these defaults, set before any of them
imports transformers or tokenizers."""

import os

# Model hubs are unreachable here: a hub lookup would spend ~59 s in retries before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The tokenizers' own thread pool would compete for the cores with the engines being timed.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
