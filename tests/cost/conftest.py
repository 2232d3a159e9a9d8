"""Fixtures of the price catalog and snapshot tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llmctl.cost.snapshot import DATA_DIR


@pytest.fixture
def snapshot_copy(tmp_path: Path) -> Path:
    """A private copy of the pinned snapshot (a new directory, so never served from the catalog cache)."""
    copy = tmp_path / "snapshot"
    shutil.copytree(DATA_DIR, copy)
    return copy
