"""Paths and types the tests share (importable because pytest puts tests/ on the path)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "llmops.yaml"
EXAMPLE_CONTRACT = REPO.parent / "shared" / "llmops.example.yaml"

Run = Callable[..., subprocess.CompletedProcess[str]]
