"""The shared library stays mypy clean (the tox env `typing` runs the same check)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_shared_is_mypy_clean() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "shared/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:]
