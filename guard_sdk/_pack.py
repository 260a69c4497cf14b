"""Where the default guard pack lives, and getting it there on first use.

The pack (``content-safety`` and ``prompt-injection`` for inputs, ``answer-safety`` for answers) is built by our own builder from permissively licensed seed
sets, so it is not shipped in the wheel: ``guard-build pack`` writes it into the user's cache directory, and
``Guard.default()`` runs that command on first use when the builder is installed. The runtime never imports the
builder; it starts it as a separate process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ._errors import BundleNotFoundError

__all__ = ["PACK_GUARDS", "PACK_VERSION", "default_pack_dir", "ensure_default_pack"]

# Bumped whenever the recipe changes (data, model or calibration): Guard.default() looks in one folder per version, so
# a changed recipe is built on first use instead of an older pack being loaded. 0.2.0 added benign dark-topic questions
# and more in-character replies and assistant commands; 0.3.0 keeps that data and calibrates the thresholds to flag at
# most 4 % of the benign validation texts (benchmarks/README.md, "Default pack"); 0.3.1 calibrates them on the scores
# `check` gives (one text per call) instead of batch scores, which move with the batch under dynamic int8; 0.4.0 keeps
# all of that and ships each guard's head beside its encoder, so the two guards share one encoder run per window;
# 0.5.0 adds the answer guard (answer-safety, judging an answer with its request, in output checks) and the chat-style
# seed sets, and the two text guards check inputs only.
PACK_VERSION = "0.5.0"
PACK_GUARDS = ("content-safety", "prompt-injection", "answer-safety")


def default_pack_dir() -> Path:
    """``$GUARD_SDK_PACK_DIR``, else ``$XDG_CACHE_HOME/guard-sdk/pack-<version>`` (``~/.cache`` by default)."""
    if explicit := os.environ.get("GUARD_SDK_PACK_DIR"):
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "guard-sdk" / f"pack-{PACK_VERSION}"


def ensure_default_pack(folder: Path | None = None, *, build: bool = True) -> list[Path]:
    """The pack's bundle folders; when missing and ``build`` is set, ``guard-build pack`` builds them (its progress
    is printed to this process's terminal)."""
    from ._bundle import MANIFEST_NAME  # here: `default_pack_dir` and the constants need no pydantic

    folder = folder or default_pack_dir()
    bundles = [folder / name for name in PACK_GUARDS]
    if all((b / MANIFEST_NAME).is_file() for b in bundles):
        return bundles
    if not build:
        raise BundleNotFoundError(folder, "the default pack is not built; run `guard-build pack`")
    if importlib.util.find_spec("builder") is None:
        raise BundleNotFoundError(
            folder,
            "the default pack is not built and the builder is not installed: "
            "`pip install guard-sdk[builder]`, then `guard-build pack` (about 30 minutes on 2 cores)",
        )
    import subprocess  # only here: `import guard_sdk` stays cheap

    print(f"guard-sdk: building the default guard pack into {folder} (first use only)", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "builder.cli", "pack", "--out", str(folder)], check=False)
    if done.returncode != 0:
        raise BundleNotFoundError(folder, f"`guard-build pack` failed (exit {done.returncode}); see its output above")
    return bundles
