"""Pinning file and pkg:// sources: size, sha256 and, for a GGUF file, its header fields and parameter count."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from llmctl.config.sources import SourceNotFound, local_path
from llmctl.gguf import NotGguf, read_gguf
from llmctl.lock.architecture import architecture_from_gguf
from llmctl.lock.model import LockError, ModelLock

if TYPE_CHECKING:
    from llmctl.config.schema import Model
    from llmctl.desired import Desired

# GGUF key (after the architecture's prefix) -> the name kept in the lock
_GGUF_ARCH_KEYS = {
    "context_length": "context_length",
    "block_count": "block_count",
    "embedding_length": "embedding_length",
    "feed_forward_length": "feed_forward_length",
    "attention.head_count": "head_count",
    "attention.head_count_kv": "head_count_kv",
    "attention.key_length": "key_length",
    "attention.value_length": "value_length",
    "vocab_size": "vocab_size",
    "expert_count": "expert_count",
    "expert_used_count": "expert_used_count",
}
_GGUF_GENERAL_KEYS = {"general.architecture": "architecture", "general.name": "name",
                      "general.size_label": "size_label", "general.file_type": "file_type"}


def resolve_file(text: str, path: Path) -> ModelLock:
    """The lock entry of the model file at `path`, named `text` in the config."""
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.fstat(f.fileno()).st_size
            header = read_gguf_header(f)
    except OSError as exc:
        raise LockError(f"cannot read model file {path}: {exc}") from None
    entry = ModelLock(source=text, kind="file", weights_bytes=size, file_sha256=digest)
    if header is not None:
        fields, parameters = header
        entry.gguf = fields
        entry.parameters = parameters
        entry.dtype = fields.get("file_type")
        entry.architecture = architecture_from_gguf(fields)
    return entry


def local_size(model: Model, desired: Desired) -> int | None:
    """The size of the file a model's local source names now; None when it names none."""
    try:
        return local_path(model.parsed_source, desired.config_dir).stat().st_size
    except (SourceNotFound, OSError):
        return None


def read_gguf_header(f: BinaryIO) -> tuple[dict[str, Any], int | None] | None:
    """The header fields the lock keeps of a GGUF file, and its parameter count: None when it is not GGUF or the
    `gguf` package (for the names of file types, Q4_1) is not installed."""
    try:
        import gguf
    except ImportError:
        return None
    try:
        header = read_gguf(f, _kept)
    except NotGguf:
        return None
    kv = header.metadata
    fields: dict[str, Any] = {"version": header.version, "tensor_count": header.tensor_count}
    for key, name in _GGUF_GENERAL_KEYS.items():
        if isinstance(kv.get(key), (str, int, float)):  # not an array
            fields[name] = kv[key]
    if isinstance(fields.get("file_type"), int):
        try:
            member = gguf.LlamaFileType(fields["file_type"]).name
            fields["file_type"] = member.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            fields["file_type"] = str(fields["file_type"])
    arch = fields.get("architecture")
    if isinstance(arch, str):
        for key, name in _GGUF_ARCH_KEYS.items():
            got = kv.get(f"{arch}.{key}")
            if isinstance(got, (int, float)) and not isinstance(got, bool):
                fields[name] = got
    return fields, (header.parameters or None)


def _kept(key: str) -> bool:
    # Architecture keys are prefixed by general.architecture, which need not come first: keep any prefix's.
    return key in _GGUF_GENERAL_KEYS or key.partition(".")[2] in _GGUF_ARCH_KEYS
