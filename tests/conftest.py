"""Fixtures shared by the suite: the llmctl command as a user runs it, and a private copy of the quickstart."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import QUICKSTART, Run


@pytest.fixture
def llmctl() -> Run:
    """Run the installed `llmctl` in a subprocess (non-TTY, like CI); returns the completed process."""
    def run(*args: str, cwd: Path | None = None, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmctl", *args], cwd=cwd, input=input, text=True,
                              capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})

    return run


@pytest.fixture
def quickstart(tmp_path: Path) -> Path:
    """A copy of the quickstart config in its own directory (so state and logs are private to the test)."""
    target = tmp_path / "llmops.yaml"
    shutil.copy(QUICKSTART, target)
    return target
