"""Everything llmctl asks the Hugging Face Hub: pinning hf:// sources, and whether a pinned branch has moved.

huggingface_hub (and its HTTP client) is imported inside the functions that query the hub, never at module level:
what asks the hub nothing (reading, writing or comparing a lock, pinning local files) does not pay for its import.
"""
from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.config.sources import Source, parse_source
from llmctl.lock.architecture import architecture_from_config
from llmctl.lock.model import Lock, LockError, ModelLock

if TYPE_CHECKING:
    from huggingface_hub import HfApi

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


def offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; a change since then counts too.
    return constants.is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _default_api() -> HfApi:
    from huggingface_hub import HfApi

    # HF_ENDPOINT is read now, not when huggingface_hub was imported; the token (HF_TOKEN or `hf auth login`) is
    # read by huggingface_hub at each request and never stored here.
    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or None
    return HfApi(endpoint=endpoint)


class Hub:
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


def upstream_moved(lock: Lock, api: HfApi | None = None) -> list[str]:
    """hf models pinned from a branch (or tag) that now points elsewhere on the hub. Offline, or when the hub
    cannot be reached, it says nothing: this is advice, never an error."""
    pinned = [(name, entry) for name, entry in sorted(lock.models.items())
              if entry.kind == "hf" and entry.sha and entry.revision and not _COMMIT.match(entry.revision)]
    if not pinned or offline():
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
