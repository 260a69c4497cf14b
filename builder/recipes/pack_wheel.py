"""The default pack as a pure-Python wheel, ``guard-sdk-pack``: ``pip install guard-sdk[pack]`` then gives
``Guard.default()`` the pack without the builder or the seed sets.

The wheel's package (``guard_sdk.bundle.PACK_PACKAGE``) holds the pack folder's bundles as they are, each with its
``ATTRIBUTION.md`` (hashed in its guard.json like the model), and the pack's report ``pack.json``; its version is the
pack's. setuptools' wheel backend writes it (metadata, RECORD). It is reproducible: the bytes depend only on the pack
folder (and the setuptools version), as files are added in sorted order with fixed modes, and every timestamp is the
newest bundle's ``created_at`` (through ``SOURCE_DATE_EPOCH``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from guard_sdk import PACK_GUARDS, PACK_VERSION, GuardBundle
from guard_sdk.bundle import MANIFEST_NAME, PACK_DISTRIBUTION, PACK_PACKAGE, PACK_REPORT

from ..errors import BuilderError

__all__ = ["write_pack_wheel"]

_PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "{version}"
description = "The default guard pack of guard-sdk: content-safety, prompt-injection and answer-safety bundles."
readme = {{text = {readme}, content-type = "text/markdown"}}
requires-python = ">=3.10"

[tool.setuptools]
packages = ["{package}"]
include-package-data = false

[tool.setuptools.package-data]
{package} = ["{report}", "*/**/*"]
"""

_README = """\
The default guard pack of guard-sdk, version {version}: int8 ONNX guard bundles that `Guard.default()` loads when this package is installed (`pip install guard-sdk[pack]`).
Guards: {guards}. Each bundle folder's `ATTRIBUTION.md` names the data sets it was trained on and their licenses.
"""

_INIT = '''"""The default guard pack of guard-sdk, pack {version}: one bundle folder per guard and pack.json. Load it with
``guard_sdk.Guard.default()``; this package has no code."""
'''


def write_pack_wheel(pack: Path, out: Path) -> Path:
    """Write the wheel of the built pack folder ``pack`` (what ``guard-build pack`` writes) into the folder ``out``;
    returns the wheel's path. The pack's bundles are loaded and their files checked first."""
    pack, out = Path(pack), Path(out)
    bundles = _check_pack(pack)
    epoch = max(_epoch(bundle) for bundle in bundles)
    try:
        out.mkdir(parents=True, exist_ok=True)  # before the build: an unusable folder fails fast
    except OSError as exc:
        raise _unwritable(out, exc) from exc
    with tempfile.TemporaryDirectory(prefix="guard-sdk-pack-") as temp:
        project = Path(temp) / "project"
        package = project / PACK_PACKAGE
        package.mkdir(parents=True)
        _write(package / PACK_REPORT, (pack / PACK_REPORT).read_bytes())
        _write(package / "__init__.py", _INIT.format(version=PACK_VERSION).encode())
        for bundle in bundles:
            for name in [MANIFEST_NAME, *bundle.manifest.files]:
                _write(package / bundle.path.name / name, (bundle.path / name).read_bytes())
        readme = _README.format(version=PACK_VERSION, guards=", ".join(PACK_GUARDS))
        pyproject = _PYPROJECT.format(
            distribution=PACK_DISTRIBUTION,
            version=PACK_VERSION,
            package=PACK_PACKAGE,
            report=PACK_REPORT,
            readme=json.dumps(readme),  # a JSON string is a TOML basic string
        )
        _write(project / "pyproject.toml", pyproject.encode())
        wheel = _build_wheel(project, Path(temp) / "dist", epoch)
        try:
            shutil.copyfile(wheel, out / wheel.name)
        except OSError as exc:
            raise _unwritable(out, exc) from exc
    return out / wheel.name


def _unwritable(out: Path, exc: OSError) -> BuilderError:
    return BuilderError(f"cannot write the wheel into {out}: {exc.strerror or exc}")


def _check_pack(pack: Path) -> list[GuardBundle]:
    """The pack's bundles, loaded (their files checked); a folder that is not a built pack of this version is
    refused with what is wrong."""
    if not pack.is_dir():
        raise BuilderError(f"{pack} is not a folder; give the pack folder `guard-build pack --out` wrote")
    try:
        report = json.loads((pack / PACK_REPORT).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuilderError(f"{pack} is not a built pack: it has no {PACK_REPORT} (`guard-build pack` writes it last)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BuilderError(f"{pack / PACK_REPORT} is not readable JSON: {exc}") from exc
    if not isinstance(report, dict) or report.get("guards") != list(PACK_GUARDS):
        raise BuilderError(f"{pack / PACK_REPORT} does not list the pack's guards {list(PACK_GUARDS)}")
    if report.get("version") != PACK_VERSION:
        raise BuilderError(
            f"{pack} holds pack {report.get('version')!r}, but guard_sdk expects pack {PACK_VERSION}: "
            "rebuild it with `guard-build pack`"
        )
    return [GuardBundle.load(pack / name) for name in PACK_GUARDS]


def _epoch(bundle: GuardBundle) -> int:
    created = bundle.manifest.created_at
    if created is None:
        raise BuilderError(f"{bundle.path / MANIFEST_NAME} has no created_at, the wheel's timestamp")
    try:
        return int(datetime.fromisoformat(created).timestamp())
    except ValueError as exc:
        raise BuilderError(f"{bundle.path / MANIFEST_NAME}: created_at {created!r} is not an ISO date") from exc


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)  # the wheel records modes: not the umask's


def _build_wheel(project: Path, dist: Path, epoch: int) -> Path:
    """setuptools' PEP 517 ``build_wheel``, in a process of its own (it works in the current folder and keeps global
    state)."""
    hook = "import sys, setuptools.build_meta as backend; print(backend.build_wheel(sys.argv[1]))"
    done = subprocess.run(
        [sys.executable, "-c", hook, str(dist)],
        cwd=project,
        env={**os.environ, "SOURCE_DATE_EPOCH": str(epoch)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BuilderError(f"setuptools could not build the pack's wheel:\n{done.stderr[-4000:]}")
    return dist / done.stdout.strip().splitlines()[-1]
