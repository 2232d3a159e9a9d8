"""llmops.lock: what the config's model sources and prompts resolved to, pinned beside the config.

An hf:// source names a branch that moves; the lock records the commit it resolved to, with the facts plans need
(parameter count, weight dtype and bytes, the attention shape from config.json). A file or pkg:// source is pinned
by size and sha256 (plus its GGUF header fields), a prompt by the sha256 of its text. Once written, an entry is kept
as it is, with no network call, until its source changes or `llmctl lock --update` asks to re-resolve:
a plan never silently moves a pin. `stale` says when the lock no longer matches the config, `upstream_moved`
when a pinned branch has moved on the hub.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

from pydantic import BaseModel, ValidationError

from llmctl.config.schema import Model, Prompt
from llmctl.config.sources import Source, SourceNotFound, local_path, parse_source
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.gguf import NotGguf, read_gguf

if TYPE_CHECKING:
    from huggingface_hub import HfApi

LOCK_FILE = "llmops.lock"
LOCK_VERSION = 1
DEFAULT_REVISION = "main"
HUB_TIMEOUT_S = 30.0  # per request; huggingface_hub's own default for model_info is no timeout at all
MOVED_TIMEOUT_S = 10.0  # upstream_moved runs on every plan: a slow hub must not hold it up for long
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

# Bytes per element of each safetensors dtype.
DTYPE_BYTES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F6_E2M3": 0.75, "F6_E3M2": 0.75, "F4": 0.5,
}


class LockError(LlmctlError):
    """The lock cannot be read or a model cannot be pinned; the message names the model and what to do."""


class ModelLock(BaseModel):
    source: str  # as written in the config
    kind: Literal["hf", "file", "api"]
    revision: str | None = None  # hf: as requested (default "main")
    sha: str | None = None  # hf: the commit it resolved to
    parameters: int | None = None  # hf: from the safetensors headers (else the hub's count); GGUF: its tensors
    dtype: str | None = None  # hf: the dominant weight dtype (BF16); GGUF: its file type (Q4_1)
    bytes_per_param: float | None = None  # of `dtype`
    weights_bytes: int | None = None  # hf: every weight × the bytes of its dtype; file: the file's size
    file_sha256: str | None = None  # file and pkg:// sources
    architecture: dict[str, int] | None = None  # num_hidden_layers, num_key_value_heads, head_dim, hidden_size
    gguf: dict[str, Any] | None = None  # GGUF header fields: architecture, block_count, context_length, ...


class Lock(BaseModel):
    lock_version: Literal[1] = 1
    models: dict[str, ModelLock]
    prompts: dict[str, str]  # prompt name -> sha256 of its system text, template and variables
    prices: str | None = None  # the price catalog version the plan used


# --- the file ----------------------------------------------------------------------------------------------------


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


def lock_of(desired: Desired) -> Lock | None:
    """The llmops.lock beside `desired`'s config, when there is one."""
    return read_lock(lock_path(desired.config_dir / "llmops.yaml"))


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
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: readers see the old lock or the new one, never a mix, even if llmctl is killed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(dumps(lock).encode("utf-8"))
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # a file to commit, not a secret: mkstemp makes it 0600
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --- resolving -----------------------------------------------------------------------------------------------------


def prompt_digest(prompt: Prompt) -> str:
    """sha256 of what the model is sent: system text, template and variables (not the version number)."""
    text = json.dumps({"system": prompt.system, "template": prompt.template, "variables": prompt.variables},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve(desired: Desired, prices: str | None, api: HfApi | None = None, previous: Lock | None = None,
            update: bool = False) -> Lock:
    """The lock for `desired`. Entries of `previous` whose source is unchanged are kept as they are (no network
    call) unless `update`; every other model is resolved: hf:// on the hub through `api` (by default HfApi() for
    HF_ENDPOINT, with HF_TOKEN), files by size and sha256."""
    old_models = previous.models if previous is not None else {}
    hub = _Hub(api)
    models: dict[str, ModelLock] = {}
    for name, model in sorted(desired.models.items()):
        old = old_models.get(name)
        if old is not None and not update and old.source == model.source and _still_pinned(old, model, desired):
            models[name] = old
            continue
        models[name] = _resolve_model(name, model, desired, hub, old, update)
    prompts = {name: prompt_digest(prompt) for name, prompt in sorted(desired.prompts.items())}
    return Lock(models=models, prompts=prompts, prices=prices)


def _resolve_model(name: str, model: Model, desired: Desired, hub: "_Hub", old: ModelLock | None,
                   update: bool) -> ModelLock:
    source = parse_source(model.source)
    if source.scheme == "api":
        return ModelLock(source=model.source, kind="api")
    if source.scheme == "hf":
        if _offline():
            if update and old is not None and old.source == model.source:
                raise LockError(f"model {name}: {model.source} cannot be re-resolved: the hub is offline "
                                f"(HF_HUB_OFFLINE): run llmctl lock --update with network access")
            changed = " (its source changed)" if old is not None else ""
            raise LockError(f"model {name}: {model.source} is not in {LOCK_FILE}{changed} and the hub is offline "
                            f"(HF_HUB_OFFLINE): run llmctl lock with network access")
        return hub.resolve(name, model.source, source, old)
    try:
        path = local_path(source, desired.config_dir)
    except SourceNotFound as exc:
        raise LockError(f"model {name}: {exc}") from None
    return _resolve_file(model.source, path)


def _still_pinned(old: ModelLock, model: Model, desired: Desired) -> bool:
    """A kept file entry must still describe the file: re-hash when its size changed (a new package version)."""
    if old.kind != "file":
        return True
    size = _local_size(model.source, desired)
    return size is None or size == old.weights_bytes


def _local_size(source: str, desired: Desired) -> int | None:
    try:
        return local_path(parse_source(source), desired.config_dir).stat().st_size
    except (SourceNotFound, OSError, ValueError):
        return None


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a change since then counts too.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _default_api() -> HfApi:
    from huggingface_hub import HfApi

    # HF_ENDPOINT is read now, not when huggingface_hub was imported; the token (HF_TOKEN or `hf auth login`) is
    # read by huggingface_hub at each request and never stored here.
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    return HfApi(endpoint=endpoint)


class _Hub:
    """Resolves hf:// sources, turning the hub's failures into LockErrors that say what to do."""

    def __init__(self, api: HfApi | None) -> None:
        self._api = api
        self._resolved: dict[str, ModelLock] = {}  # by source: two models may serve the same repo

    @property
    def api(self) -> HfApi:
        if self._api is None:
            self._api = _default_api()
        return self._api

    def resolve(self, name: str, text: str, source: Source, old: ModelLock | None) -> ModelLock:
        if text not in self._resolved:
            self._resolved[text] = self._resolve(name, text, source, old)
        return self._resolved[text].model_copy(deep=True)

    def _resolve(self, name: str, text: str, source: Source, old: ModelLock | None) -> ModelLock:
        revision = source.revision or DEFAULT_REVISION
        try:
            with _quiet():
                info = self.api.model_info(source.location, revision=revision, timeout=HUB_TIMEOUT_S)
                sha = info.sha or (revision if _COMMIT.match(revision) else None)
                if sha is None:
                    raise LockError(f"model {name}: the hub at {self.api.endpoint} did not say which commit "
                                    f"{source.location}@{revision} is: check HF_ENDPOINT")
                if old is not None and old.source == text and old.sha == sha:
                    return old  # the same commit holds the same files: nothing else to fetch
                files = {s.rfilename for s in info.siblings} if info.siblings is not None else None
                counts = self._parameter_counts(source.location, sha, files, info)
                architecture = self._architecture(source.location, sha, files)
        except LockError:
            raise
        except Exception as exc:
            raise self._error(name, text, source, revision, exc) from None
        entry = ModelLock(source=text, kind="hf", revision=revision, sha=sha, architecture=architecture)
        if counts:
            dtype = max(counts, key=lambda d: (counts[d], d))
            entry.parameters = sum(counts.values())
            entry.dtype = dtype
            entry.bytes_per_param = DTYPE_BYTES.get(dtype)
            if all(d in DTYPE_BYTES for d in counts):
                entry.weights_bytes = int(sum(n * DTYPE_BYTES[d] for d, n in counts.items()))
        return entry

    def _parameter_counts(self, repo: str, sha: str, files: set[str] | None, info: Any) -> dict[str, int] | None:
        from huggingface_hub.errors import NotASafetensorsRepoError, SafetensorsParsingError

        if files is None or files & {"model.safetensors", "model.safetensors.index.json"}:
            try:
                counts = self.api.get_safetensors_metadata(repo, revision=sha).parameter_count
                if counts:
                    return dict(counts)
            except (NotASafetensorsRepoError, SafetensorsParsingError):
                pass
        if info.safetensors is not None and info.safetensors.parameters:
            return dict(info.safetensors.parameters)
        return None

    def _architecture(self, repo: str, sha: str, files: set[str] | None) -> dict[str, int] | None:
        from huggingface_hub.errors import RemoteEntryNotFoundError

        if files is not None and "config.json" not in files:
            return None
        try:
            path = self.api.hf_hub_download(repo, "config.json", revision=sha)
        except RemoteEntryNotFoundError:
            return None
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return architecture_from_config(config) if isinstance(config, dict) else None

    def _error(self, name: str, text: str, source: Source, revision: str, exc: Exception) -> Exception:
        import httpx2
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        endpoint = self.api.endpoint
        status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
        if isinstance(exc, GatedRepoError):
            granted = " (the token in use has not been granted access)" if status == 403 else ""
            return LockError(f"model {name}: {source.location} is gated: accept its license on the hub and set "
                             f"HF_TOKEN{granted}")
        if isinstance(exc, RevisionNotFoundError):
            return LockError(f"model {name}: revision '{revision}' not found in {source.location} on {endpoint}: "
                             f"fix the @REVISION in its source ({text})")
        if isinstance(exc, RepositoryNotFoundError):
            return LockError(f"model {name}: repository {source.location} not found on {endpoint}: check the "
                             f"source ({text}); if the repository is private, set HF_TOKEN")
        if isinstance(exc, OfflineModeIsEnabled):
            return LockError(f"model {name}: {text} is not in llmops.lock and the hub is offline (HF_HUB_OFFLINE): "
                             f"run llmctl lock with network access")
        if isinstance(exc, (httpx2.TransportError, LocalEntryNotFoundError)) or (status or 0) >= 500:
            detail = f"HTTP {status}" if status else (str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return LockError(f"model {name}: the hub at {endpoint} is unreachable ({detail}): check the network "
                             f"or HF_ENDPOINT, then run llmctl lock again")
        if isinstance(exc, HfHubHTTPError):
            first = str(exc).splitlines()[0] if str(exc) else f"HTTP {status}"
            return LockError(f"model {name}: the hub at {endpoint} refused {source.location}@{revision} ({first})")
        if isinstance(exc, OSError):  # writing config.json to the Hugging Face cache
            from huggingface_hub import constants

            return LockError(f"model {name}: {exc} (the Hugging Face cache is {constants.HF_HUB_CACHE}: set "
                             f"HF_HOME to a writable directory)")
        return exc


@contextmanager
def _quiet() -> Iterator[None]:
    """No huggingface_hub progress bars ("Parse safetensors files") in llmctl's output."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not was_disabled:
            disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                enable_progress_bars()


_CONFIG_ALIASES = {"n_layer": "num_hidden_layers", "n_embd": "hidden_size", "n_head": "num_attention_heads"}


def architecture_from_config(config: dict[str, Any]) -> dict[str, int] | None:
    """num_hidden_layers, num_key_value_heads, head_dim and hidden_size from a transformers config.json; the decoder
    of a multimodal model is read from its text_config."""
    for candidate in (config, config.get("text_config"), config.get("llm_config")):
        if not isinstance(candidate, dict):
            continue
        cfg = {_CONFIG_ALIASES.get(k, k): v for k, v in candidate.items()}
        found = _architecture(*(_int(cfg.get(key)) for key in (
            "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")))
        if found:
            return found
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


# --- local files and GGUF --------------------------------------------------------------------------------------------


def _resolve_file(text: str, path: Path) -> ModelLock:
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
        entry.architecture = _gguf_architecture(fields)
    return entry


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


def _gguf_architecture(fields: dict[str, Any]) -> dict[str, int] | None:
    return _architecture(*(_int(fields.get(key)) for key in (
        "block_count", "embedding_length", "head_count", "head_count_kv", "key_length")))


def _architecture(layers: int | None, hidden: int | None, heads: int | None, kv_heads: int | None,
                  head_dim: int | None) -> dict[str, int] | None:
    """The shape the KV-cache estimate needs; KV heads default to attention heads, head_dim to hidden/heads."""
    if layers is None or hidden is None:
        return None
    out = {"num_hidden_layers": layers, "hidden_size": hidden}
    kv_heads = kv_heads or heads
    head_dim = head_dim or (hidden // heads if heads else None)
    if kv_heads:
        out["num_key_value_heads"] = kv_heads
    if head_dim:
        out["head_dim"] = head_dim
    return out


# --- comparing -------------------------------------------------------------------------------------------------------


def stale(lock: Lock, desired: Desired, prices: str | None) -> list[str]:
    """Why `lock` no longer matches the config: [] when it does. A plan re-locks when this is not empty."""
    reasons: list[str] = []
    for name in sorted(desired.models.keys() | lock.models.keys()):
        model, entry = desired.models.get(name), lock.models.get(name)
        if entry is None:
            reasons.append(f"model {name} is not in {LOCK_FILE}")
        elif model is None:
            reasons.append(f"model {name} is in {LOCK_FILE} but no longer in the config")
        elif entry.source != model.source:
            reasons.append(f"model {name}: source changed from {entry.source} to {model.source}")
        elif entry.kind == "file":
            size = _local_size(model.source, desired)
            if size is not None and size != entry.weights_bytes:
                reasons.append(f"model {name}: the file changed since it was locked "
                               f"({entry.weights_bytes} bytes, now {size})")
    for name in sorted(desired.prompts.keys() | lock.prompts.keys()):
        prompt, digest = desired.prompts.get(name), lock.prompts.get(name)
        if digest is None:
            reasons.append(f"prompt {name} is not in {LOCK_FILE}")
        elif prompt is None:
            reasons.append(f"prompt {name} is in {LOCK_FILE} but no longer in the config")
        elif prompt_digest(prompt) != digest:
            reasons.append(f"prompt {name}: its text changed since it was locked")
    if lock.prices != prices:
        reasons.append(f"the price catalog changed from {lock.prices or 'none'} to {prices or 'none'}")
    return reasons


def upstream_moved(lock: Lock, api: HfApi | None = None) -> list[str]:
    """hf models pinned from a branch (or tag) that now points elsewhere on the hub. Offline, or when the hub
    cannot be reached, it says nothing: this is advice, never an error."""
    pinned = [(name, entry) for name, entry in sorted(lock.models.items())
              if entry.kind == "hf" and entry.sha and entry.revision and not _COMMIT.match(entry.revision)]
    if not pinned or _offline():
        return []
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = api if api is not None else _default_api()
    moved = []
    for name, entry in pinned:
        repo = parse_source(entry.source).location
        try:
            sha = api.model_info(repo, revision=entry.revision, timeout=MOVED_TIMEOUT_S).sha
        except (httpx2.TransportError, OfflineModeIsEnabled):
            break  # unreachable: the other models would only wait for the same timeout
        except (HfHubHTTPError, OSError):
            continue
        if sha and sha != entry.sha:
            moved.append(f"model {name}: {entry.revision} moved from {entry.sha[:7]} to {sha[:7]} "
                         f"(llmctl lock --update)")
    return moved
