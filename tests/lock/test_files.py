"""llmops.lock on disk: a stable layout, atomic writes, and errors naming a broken file."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmctl.lock import Lock, LockError, ModelLock, lock_path, read_lock, write_lock
from lock.configs import QWEN


def test_write_and_read_round_trip_with_a_stable_layout(tmp_path: Path) -> None:
    lock = Lock(
        models={"b": ModelLock(source="b.gguf", kind="file", weights_bytes=3, file_sha256="ab" * 32),
                "a": ModelLock(source=QWEN, kind="hf", revision="main", sha="1" * 40,
                               architecture={"num_hidden_layers": 2, "hidden_size": 8})},
        prompts={"z": "0" * 64, "y": "1" * 64}, prices="v1")
    path = lock_path(tmp_path / "llmops.yaml")
    assert path == tmp_path / "llmops.lock"

    write_lock(path, lock)
    text = path.read_text()
    write_lock(path, read_lock(path))

    assert path.read_text() == text and text.endswith("}\n")
    data = json.loads(text)
    assert list(data) == ["lock_version", "models", "prompts", "prices"]
    assert list(data["models"]) == ["a", "b"] and list(data["prompts"]) == ["y", "z"]
    assert list(data["models"]["a"]["architecture"]) == ["hidden_size", "num_hidden_layers"]
    assert "parameters" not in data["models"]["a"]  # unknown facts are left out, not written as null
    assert read_lock(path) == lock
    assert os.stat(path).st_mode & 0o044  # readable by others: a file to commit, not a secret
    assert [p.name for p in tmp_path.iterdir()] == ["llmops.lock"]


def test_a_failed_write_leaves_the_old_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "llmops.lock"
    old = Lock(models={}, prompts={}, prices="v1")
    write_lock(path, old)

    def crash(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_lock(path, Lock(models={}, prompts={}, prices="v2"))

    assert read_lock(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["llmops.lock"]  # no temp file left behind


def test_a_missing_lock_is_none_and_a_corrupt_one_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "llmops.lock"
    assert read_lock(path) is None

    for text, detail in [("{not json", "not JSON"), ("[]", "not a JSON object"),
                         ('{"lock_version": 1, "models": {"m": {"kind": "hf"}}, "prompts": {}}', "models.m.source")]:
        path.write_text(text)
        with pytest.raises(LockError) as caught:
            read_lock(path)
        assert str(caught.value).startswith(f"{path} is not a valid llmctl lock file ({detail}")
        assert "delete it and run llmctl lock" in str(caught.value)

    path.write_text('{"lock_version": 2, "models": {}, "prompts": {}}')
    with pytest.raises(LockError, match="written by a newer llmctl \\(lock_version 2"):
        read_lock(path)
