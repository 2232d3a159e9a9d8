"""Paths and types the tests share (importable because pytest puts tests/ on the path)."""
from __future__ import annotations

import os
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

# The quickstart gateway's key in tests (the README has users generate their own).
QUICKSTART_KEY = "qs-test-key-0123456789"


def without_pulumi_cli() -> dict[str, str]:
    """The environment of a machine without the pulumi CLI, like CI's, on any machine: a PATH without the
    directories that hold one (the cloud providers then plan offline and refuse to apply)."""
    return {"PATH": os.pathsep.join(directory for directory in os.environ["PATH"].split(os.pathsep)
                                    if not (Path(directory) / "pulumi").exists())}


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
