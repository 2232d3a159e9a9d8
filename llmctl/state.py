"""Local state backend: one JSON document per (project, environment) under `.llmctl/state/`, with history and a lock."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import filelock
from pydantic import BaseModel, Field, ValidationError, model_validator

from llmctl.atomic import write_atomic
from llmctl.config.schema import Config
from llmctl.desired import config_from_objects
from llmctl.evals.model import EvalResult
from llmctl.errors import LlmctlError
from llmctl.lock import Lock
from llmctl.resource import Resource
from llmctl.rollout.model import RolloutRecord

FORMAT_VERSION = 1


class StateError(LlmctlError):
    """The state file is corrupt, unreadable, or belongs to another state."""


class StateLocked(LlmctlError):
    """Another process holds the state lock."""


ApplyStatus = Literal["applying", "applied", "failed", "rolled_back", "destroying", "destroyed", "rolling_out"]
# What `llmctl status` calls each; "applying" and "destroying" left behind mean the run was interrupted.
STATUS_TEXT: dict[str, str] = {"applying": "apply in progress", "applied": "applied", "failed": "apply failed",
                               "rolled_back": "apply rolled back", "destroying": "destroy in progress",
                               "destroyed": "destroyed", "rolling_out": "rollout in progress"}


class State(BaseModel):
    format_version: Literal[1] = FORMAT_VERSION
    project: str
    environment: str
    serial: int = 0  # 0 = nothing ever written
    lineage: str  # no default: a file without one must fail validation, not silently get a new identity
    desired: Config | None = Field(None, description="The config last applied (normalised).")
    lock: Lock | None = Field(None, description="The lock entries it was applied with: what is deployed.")
    resources: list[Resource] = Field(default_factory=list)
    endpoints: dict[str, list[str]] = Field(default_factory=dict)
    updated_at: str | None = None
    status: ApplyStatus | None = Field(None, description="How the last apply or destroy ended; None: never run.")
    status_reason: str | None = Field(None, description="Why it failed or rolled back, or what it warned about.")
    verification: dict[str, Any] = Field(default_factory=dict)  # model -> its last SLO load-test result
    evals: dict[str, EvalResult] = Field(default_factory=dict)  # MODEL/EVAL -> its last run, passed or not
    # MODEL/EVAL -> its run in the last apply that succeeded: the baseline a regression is measured against (a run
    # that was rolled back, or a standalone `llmctl eval`, is no baseline)
    eval_baseline: dict[str, EvalResult] = Field(default_factory=dict)
    rollout: RolloutRecord | None = Field(None, description="The last rollout: under way (running, paused) or how "
                                          "it ended, with its decision record.")

    @model_validator(mode="before")
    @classmethod
    def _from_earlier_layout(cls, data: Any) -> Any:
        """State written before the applied config and the apply status were typed: the config as objects by
        address, the status as the first words of a note. Read it as it was meant, losing nothing."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        old = data.get("desired")
        if isinstance(old, dict) and "objects" in old:
            data["desired"] = config_from_objects(old["project"], old["environment"], old["objects"])
        note = data.pop("history_note", None)
        if note and "status" not in data:
            texts = [*STATUS_TEXT.items(), ("applied", "apply"), ("destroyed", "destroy")]
            for status, text in sorted(texts, key=lambda item: -len(item[1])):  # "apply failed" before "apply"
                if note.startswith(text):
                    data["status"], data["status_reason"] = status, note[len(text):].lstrip(":; ") or None
                    break
        return data

    @property
    def last_change(self) -> str | None:
        if self.status is None:
            return None
        return STATUS_TEXT[self.status] + (f": {self.status_reason}" if self.status_reason else "")

    def resources_of(self, target: str) -> list[Resource]:
        return [r for r in self.resources if r.target == target]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")




class LocalBackend:
    def __init__(self, work_dir: Path, project: str, environment: str) -> None:
        self.project, self.environment = project, environment
        base = Path(work_dir) / "state" / project
        self.path = base / f"{environment}.json"
        self.history_dir = base / f"{environment}.history"
        self.lock_path = base / f"{environment}.lock"
        self.lock_info_path = base / f"{environment}.lock.info"

    def _load(self, path: Path) -> State | None:
        """The state in `path`, or None when there is no file; StateError when it cannot be used."""
        fix = f"restore a version from {self.history_dir} or move the file aside"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"cannot read state file {path}: {e.strerror}; check its permissions") from e
        try:
            doc = json.loads(raw)
        except UnicodeDecodeError as e:
            raise StateError(f"state file {path} is corrupt: not UTF-8 text ({e.reason}); {fix}") from e
        except json.JSONDecodeError as e:
            raise StateError(f"state file {path} is corrupt: line {e.lineno} column {e.colno}: {e.msg}; {fix}") from e
        version = doc.get("format_version") if isinstance(doc, dict) else None
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise StateError(f"state file {path} has format version {version}, written by a newer "
                             f"llmctl; upgrade llmctl to use it")
        try:
            return State.model_validate(doc)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}"
                                 for err in e.errors()[:3])
            raise StateError(f"state file {path} is not a valid llmctl state ({problems}); {fix}") from e

    def read(self) -> State:
        """The current state; a fresh, unsaved one (serial 0, new lineage) when none was ever written."""
        state = self._load(self.path)
        if state is None:
            return State(project=self.project, environment=self.environment, lineage=uuid.uuid4().hex)
        return state

    def write(self, state: State) -> None:
        """Persist `state` atomically (setting its `updated_at`), keeping the version it replaces in history."""
        if (state.project, state.environment) != (self.project, self.environment):
            raise ValueError(f"state for {state.project}/{state.environment} given to the backend of "
                             f"{self.project}/{self.environment}")
        if state.serial < 1:
            raise ValueError("a written state needs serial >= 1; serial 0 means nothing was ever written")
        try:
            current = self._load(self.path)
        except StateError as e:
            raise StateError(f"not writing state: {e}") from e
        if current is not None:
            if current.lineage != state.lineage:
                raise StateError(
                    f"not writing state: {self.path} belongs to a different state (lineage {current.lineage}, "
                    f"this one {state.lineage}); if it was put there on purpose, re-run the command so it starts "
                    f"from that state, otherwise move it aside")
            if state.serial < current.serial:
                raise StateError(
                    f"not writing state: {self.path} is at serial {current.serial}, newer than this run's serial "
                    f"{state.serial}; another run changed it since it was read; re-run the command")
            self.history_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(self.history_dir / f"{current.serial:06d}-{time.time_ns()}.json", self.path.read_bytes())
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        state.updated_at = _now()
        write_atomic(self.path, (state.model_dump_json(indent=2) + "\n").encode())

    def history(self) -> list[State]:
        """Every version a write replaced, oldest first."""
        def key(p: Path) -> tuple[int, int]:
            serial, _, ns = p.stem.partition("-")
            return int(serial), int(ns)

        files = sorted((p for p in self.history_dir.glob("*-*.json") if p.stem.replace("-", "").isdigit()), key=key)
        return [s for p in files if (s := self._load(p)) is not None]

    @contextmanager
    def lock(self, timeout: float, command: str) -> Iterator[None]:
        """Hold the state lock, waiting up to `timeout` seconds (0: try once) before raising StateLocked."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = filelock.FileLock(self.lock_path, mode=0o600)
        try:
            lock.acquire(timeout=timeout)
        except filelock.Timeout:
            raise StateLocked(self._locked_message(timeout)) from None
        try:
            # filelock cannot say who holds a lock, so the holder leaves a note for whoever is kept waiting.
            info = {"pid": os.getpid(), "command": command, "hostname": socket.gethostname(), "since": _now()}
            write_atomic(self.lock_info_path, json.dumps(info).encode())
            yield
        finally:
            self.lock_info_path.unlink(missing_ok=True)  # before release, so it never deletes the next holder's note
            lock.release()

    def _locked_message(self, timeout: float) -> str:
        what = f"the state of {self.project}/{self.environment} is locked"
        try:
            info = json.loads(self.lock_info_path.read_text())
            holder = f"by pid {info['pid']} ({info['command']!r}) on {info['hostname']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            holder = f"by another process (no holder details in {self.lock_info_path})"
        return (f"{what} {holder}; waited {timeout:g}s. Retry when it finishes, "
                f"or raise --lock-timeout to wait longer")
