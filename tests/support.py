"""Paths and types the tests share (importable because pytest puts tests/ on the path)."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmctl.desired import Desired
    from llmctl.lock import Lock
    from llmctl.resolve import Resolved

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "llmops.yaml"
# The config contract, every section in use: the reference example, below its schema modeline a copy of
# shared/llmops.example.yaml (beside the repo where present: test_schemas.py checks the copy against it).
EXAMPLE_CONTRACT = REPO / "examples" / "reference" / "llmops.yaml"
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


def context(desired: Desired, lock: Lock | None = None) -> Resolved:
    """`desired` as the engine passes it down, with the lock entries the test pins (None: no llmops.lock, as for
    a cloud model whose hub cannot be reached here) instead of resolving them against a hub."""
    from llmctl.cost.catalog import load_catalog
    from llmctl.resolve import Resolved
    from llmctl.workspace import Workspace

    workspace = Workspace(desired.config_dir / "llmops.yaml", desired.project, desired.environment)
    return Resolved(desired, workspace, load_catalog(), lock)


def hub_lock(**shas: str) -> Lock:
    """A lock pinning each named hf:// model at a commit."""
    from llmctl.lock import Lock, ModelLock

    return Lock(models={name: ModelLock(source=f"hf://test/{name}", kind="hf", sha=sha) for name, sha in shas.items()},
                prompts={})


def record_apply(config: Path):  # type: ignore[no-untyped-def]
    """Write the state an apply of `config` records: its desired config, the llmops.lock entries beside it (if
    any) and every resource its programs declare. (Cloud targets cannot be applied here: no pulumi CLI and no
    cloud.)"""
    from llmctl.config.load import load
    from llmctl.desired import Desired
    from llmctl.lock import lock_path, read_lock
    from llmctl.providers import get_provider
    from llmctl.state import State

    lock = read_lock(lock_path(config))
    resolved = context(Desired.from_config(load(config)), lock)
    desired = resolved.desired
    backend = resolved.workspace.backend()
    resources = [r for name, target in desired.targets.items()
                 for r in get_provider(target.provider).resources(resolved, name)]
    backend.write(State(project=desired.project, environment=desired.environment, serial=1, status="applied",
                        lineage=backend.read().lineage, desired=desired.to_config(), lock=lock, resources=resources))
    return backend


def imported_by(statement: str) -> set[str]:
    """The modules a fresh interpreter has imported after running `statement` (this checkout's llmctl first)."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return set(done.stdout.split())
