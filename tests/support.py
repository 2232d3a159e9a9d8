"""Paths and types the tests share (importable because pytest puts tests/ on the path)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "llmops.yaml"
# The config contract (shared/llmops.example.yaml beside the repo), committed so a plain clone can test it;
# test_schemas.py checks the copy against shared/ wherever that is present.
EXAMPLE_CONTRACT = REPO / "tests" / "data" / "llmops.example.yaml"
SHARED_CONTRACT = REPO.parent / "shared" / "llmops.example.yaml"

Run = Callable[..., subprocess.CompletedProcess[str]]
