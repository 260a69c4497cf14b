"""Where the default guard pack lives, and getting it there on first use.

The pack (``content-safety`` and ``prompt-injection`` for inputs, ``answer-safety`` for answers) is built by our own
builder from permissively licensed seed sets. Users get it as the ``guard-sdk-pack`` distribution (``pip install
guard-sdk[pack]``; ``guard-build pack-wheel`` makes its wheel), whose package holds the bundle folders; developers
build it with ``guard-build pack`` into the user's cache directory, and ``Guard.default()`` runs that command on first
use when the builder is installed. The runtime never imports the builder; it starts it as a separate process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ._errors import BundleNotFoundError

__all__ = [
    "PACK_DISTRIBUTION",
    "PACK_GUARDS",
    "PACK_PACKAGE",
    "PACK_REPORT",
    "PACK_VERSION",
    "PackLocation",
    "default_pack_dir",
    "find_default_pack",
    "installed_pack",
]

# Bumped whenever the recipe changes (data, model or calibration): Guard.default() looks in one folder per version, so
# a changed recipe is built on first use instead of an older pack being loaded. What each version changed: CHANGELOG.md.
PACK_VERSION = "0.7.0"
PACK_GUARDS = ("content-safety", "prompt-injection", "answer-safety")


# The pack as a distribution: ``guard-build pack-wheel`` writes it, ``pip install guard-sdk[pack]`` installs it (the
# extra pins the version above), and its import package holds one folder per guard and the pack's ``pack.json``.
PACK_DISTRIBUTION = "guard-sdk-pack"
PACK_PACKAGE = "guard_sdk_pack"
PACK_REPORT = "pack.json"

PackSource = Literal["env", "package", "cache"]


@dataclass(frozen=True)
class PackLocation:
    """Where ``Guard.default()`` loads the pack from: ``$GUARD_SDK_PACK_DIR`` (``env``), the installed
    ``guard-sdk-pack`` (``package``, ``version`` is the distribution's) or the cache folder ``guard-build pack`` writes
    (``cache``). ``version`` is the pack's version, None when a folder has no ``pack.json`` saying it."""

    folder: Path
    source: PackSource
    version: str | None

    @property
    def bundles(self) -> list[Path]:
        return [self.folder / name for name in PACK_GUARDS]


def default_pack_dir() -> Path:
    """Where ``guard-build pack`` writes the pack, and ``Guard.default()`` looks when no ``guard-sdk-pack`` of this
    pack version is installed: ``$GUARD_SDK_PACK_DIR``, else ``$XDG_CACHE_HOME/guard-sdk/pack-<version>``
    (``~/.cache`` by default)."""
    if explicit := os.environ.get("GUARD_SDK_PACK_DIR"):
        return Path(explicit)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "guard-sdk" / f"pack-{PACK_VERSION}"


def find_default_pack(*, build: bool = True) -> PackLocation:
    """The pack ``Guard.default()`` loads: ``$GUARD_SDK_PACK_DIR`` when set, else the installed ``guard-sdk-pack`` of
    this pack version, else the cache folder. When none holds it and ``build`` is set, ``guard-build pack`` builds it
    into the folder (its progress is printed to this process's terminal); the bundles' files are checked when they
    are loaded, as any bundle's."""
    if os.environ.get("GUARD_SDK_PACK_DIR"):
        return _build_or_refuse(default_pack_dir(), "env", build)
    installed = installed_pack()
    cache = default_pack_dir()
    if installed is not None and installed.version == PACK_VERSION:
        return installed
    if _complete(cache):
        return PackLocation(cache, "cache", _folder_version(cache))
    if installed is not None:
        # Before building: whoever installed the package expects pip, not a half-hour build, to fix it.
        raise BundleNotFoundError(
            installed.folder,
            f"{PACK_DISTRIBUTION} {installed.version} is installed, but this guard-sdk loads pack {PACK_VERSION}: "
            f"`pip install {PACK_DISTRIBUTION}=={PACK_VERSION}` (or build that wheel from a checkout: "
            "`guard-build pack --wheel DIR`)",
        )
    return _build_or_refuse(cache, "cache", build)


def installed_pack() -> PackLocation | None:
    """The installed ``guard-sdk-pack`` (any version), without importing it; None when it is not installed."""
    import importlib.metadata  # here: `import guard_sdk` stays cheap

    try:
        distribution = importlib.metadata.distribution(PACK_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    # The package beside the distribution's own metadata, so folder and version are the same install's.
    return PackLocation(Path(str(distribution.locate_file(PACK_PACKAGE))), "package", distribution.version)


def _complete(folder: Path) -> bool:
    from ._bundle import MANIFEST_NAME  # here: `default_pack_dir` and the constants need no pydantic

    return all((folder / name / MANIFEST_NAME).is_file() for name in PACK_GUARDS)


def _folder_version(folder: Path) -> str | None:
    import json

    try:
        report = json.loads((folder / PACK_REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = report.get("version") if isinstance(report, dict) else None
    return version if isinstance(version, str) else None


def _build_or_refuse(folder: Path, source: PackSource, build: bool) -> PackLocation:
    if _complete(folder):
        return PackLocation(folder, source, _folder_version(folder))
    if source == "env":
        # The caller chose this folder: the package is not what they asked for.
        how = "run `guard-build pack` (GUARD_SDK_PACK_DIR points here; unset it to use an installed guard-sdk-pack)"
    else:
        how = (
            f"`pip install guard-sdk[pack]` (until {PACK_DISTRIBUTION} {PACK_VERSION} is published, build its wheel "
            "from a checkout with `guard-build pack --wheel DIR` and install that), or build it here with "
            "`guard-build pack` (needs the builder and the seed sets; about 30 minutes on 2 cores)"
        )
    # The builder's own code ships in every guard-sdk wheel; without its dependencies it cannot build.
    builder = importlib.util.find_spec("builder") is not None and importlib.util.find_spec("torch") is not None
    if not build or not builder:
        missing = "the default pack is not built" if source == "env" else "the default pack is not installed"
        raise BundleNotFoundError(folder, f"{missing}; {how}")
    import subprocess  # only here: `import guard_sdk` stays cheap

    print(f"guard-sdk: building the default guard pack into {folder} (first use only)", file=sys.stderr)
    done = subprocess.run([sys.executable, "-m", "builder.cli", "pack", "--out", str(folder)], check=False)
    if done.returncode != 0:
        raise BundleNotFoundError(folder, f"`guard-build pack` failed (exit {done.returncode}); see its output above")
    return PackLocation(folder, source, _folder_version(folder))
