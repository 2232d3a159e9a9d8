"""llmops.lock: what the config's model sources and prompts resolved to, pinned beside the config.

An hf:// source names a branch that moves; the lock records the commit it resolved to, with the facts plans need
(parameter count, weight dtype and bytes, the attention shape from config.json). A file or pkg:// source is pinned
by size and sha256 (plus its GGUF header fields), a prompt by the sha256 of its text. Once written, an entry is kept
as it is, with no network call, until its source changes or `llmctl lock --update` asks to re-resolve:
a plan never silently moves a pin. `stale` says when the lock no longer matches the config, `upstream_moved`
when a pinned branch has moved on the hub.

The modules: model (the document), files (llmops.lock on disk), resolve (building a lock), hub (hf:// sources,
the only one that imports huggingface_hub, and only when it queries), local (file and pkg:// sources, GGUF
headers), architecture (attention shapes), stale (comparing a lock with the config).
"""
from llmctl.lock.architecture import architecture_from_config
from llmctl.lock.files import LOCK_FILE, dumps, lock_path, read_lock, write_lock
from llmctl.lock.hub import upstream_moved
from llmctl.lock.model import Lock, LockError, ModelLock
from llmctl.lock.resolve import prompt_digest, resolve
from llmctl.lock.stale import stale

__all__ = ["LOCK_FILE", "Lock", "LockError", "ModelLock", "architecture_from_config", "dumps",
           "lock_path", "prompt_digest", "read_lock", "resolve", "stale", "upstream_moved", "write_lock"]
