"""guard_sdk's types as users' type checkers see them: mypy --strict on the package and on tests/typecheck/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_types_hold_under_mypy_strict():
    # public_api.py pins return types with assert_type and marks calls that must be rejected with
    # `# type: ignore[code]`; strict mode reports an ignore that no longer suppresses anything.
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "guard_sdk", "tests/typecheck/public_api.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
