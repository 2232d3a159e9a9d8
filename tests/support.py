"""Paths and types the tests share (importable because pytest puts tests/ on the path)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "llmops.yaml"
# The config contract, every section in use: the reference example, below its schema modeline a copy of
# shared/llmops.example.yaml (beside the repo where present: test_schemas.py checks the copy against it).
EXAMPLE_CONTRACT = REPO / "examples" / "reference" / "llmops.yaml"
SHARED_CONTRACT = REPO.parent / "shared" / "llmops.example.yaml"

Run = Callable[..., subprocess.CompletedProcess[str]]

# The cloud providers' path without the pulumi CLI: what plans, render and a refused apply do on a machine like CI's.
# The quickstart gateway's key in tests (the README has users generate their own).
QUICKSTART_KEY = "qs-test-key-0123456789"
WITHOUT_PULUMI_CLI = pytest.mark.skipif(shutil.which("pulumi") is not None,
                                        reason="these tests cover the path without the pulumi CLI; it is installed here")


def edit(config: Path, old: str, new: str) -> None:
    """Replace text in a config, failing loudly when the text is not there (a test that edits nothing proves nothing)."""
    text = config.read_text()
    assert old in text, f"{old!r} not in {config}"
    config.write_text(text.replace(old, new))


def record_apply(config: Path):  # type: ignore[no-untyped-def]
    """Write the state an apply of `config` records: its desired config and every resource its programs declare.
    (Cloud targets cannot be applied here: no pulumi CLI and no cloud.)"""
    from llmctl.config.load import load
    from llmctl.desired import Desired
    from llmctl.providers import get_provider
    from llmctl.state import LocalBackend, State

    desired = Desired.from_config(load(config))
    backend = LocalBackend(config.parent / ".llmctl", desired.project, desired.environment)
    resources = [r for name, target in desired.targets.items()
                 for r in get_provider(target.provider).resources(desired, name)]
    backend.write(State(project=desired.project, environment=desired.environment, serial=1,
                        lineage=backend.read().lineage, desired=desired.to_json(), resources=resources))
    return backend
