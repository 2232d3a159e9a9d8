"""llmops.lock on disk: where it is, reading it (a broken file is an error naming it), writing it atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from llmctl.atomic import write_atomic
from llmctl.lock.model import LOCK_VERSION, Lock, LockError

LOCK_FILE = "llmops.lock"


def lock_path(config_path: Path) -> Path:
    """llmops.lock in the config's directory."""
    return Path(config_path).parent / LOCK_FILE


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`; None when there is none. A file that is not a lock is an error naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise LockError(f"cannot read {path}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _corrupt(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _corrupt(path, "not a JSON object")
    version = data.get("lock_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > LOCK_VERSION:
        raise LockError(f"{path} was written by a newer llmctl (lock_version {version}; this llmctl reads "
                        f"{LOCK_VERSION}): upgrade llmctl")
    try:
        return Lock.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise _corrupt(path, f"{where}: {first['msg']}") from None


def _corrupt(path: Path, detail: str) -> LockError:
    return LockError(f"{path} is not a valid llmctl lock file ({detail}): restore it from version control, or "
                     f"delete it and run llmctl lock to pin the models again")


def dumps(lock: Lock) -> str:
    """The lock as written: JSON, fields in declaration order, names sorted, a trailing newline."""
    data = lock.model_dump(mode="json", exclude_none=True)
    models = {}
    for name, entry in sorted(data["models"].items()):
        for key in ("architecture", "gguf"):
            if key in entry:
                entry[key] = dict(sorted(entry[key].items()))
        models[name] = entry
    data["models"] = models
    data["prompts"] = dict(sorted(data["prompts"].items()))
    if data["datasets"]:
        data["datasets"] = dict(sorted(data["datasets"].items()))
    else:
        del data["datasets"]  # a config without datasets keeps the lock it had
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: readers see the old lock or the new one, never a mix, even if llmctl is killed."""
    # A file to commit, not a secret: readable as the umask allows, not mkstemp's 0600.
    write_atomic(Path(path), dumps(lock).encode("utf-8"), mode=0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
