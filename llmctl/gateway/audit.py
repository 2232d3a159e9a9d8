"""The audit log: one JSON line per request, saying who called what and what the guardrails did, never the text."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def prompt_sha256(text: str) -> str:
    """What the log records of a prompt: enough to tell two requests had the same prompt, nothing of its content."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Append, opened once: a restart continues the log. Line-buffered so each record leaves as one write.
        self._file = path.open("a", encoding="utf-8", buffering=1)

    def write(self, *, key_id: str | None, model: str | None, prompt_sha256: str, input_tokens: int,
              output_tokens: int, actions: list[str], status: int, reason: str | None = None,
              cache: str | None = None) -> None:
        """key_id/model are None when the request never got that far (no key, malformed body); `cache`: hit,
        miss or bypass, when the gateway has a cache."""
        if not _SHA256_HEX.fullmatch(prompt_sha256):
            # Refuse rather than log: anything but a hash here could be the prompt itself.
            raise ValueError("prompt_sha256 must be a lower-case sha256 hex digest (see prompt_sha256())")
        line = json.dumps({
            "time": datetime.now(timezone.utc).isoformat(),
            "key_id": key_id,
            "model": model,
            "prompt_sha256": prompt_sha256,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "actions": actions,
            "status": status,
            "reason": reason,
            **({"cache": cache} if cache is not None else {}),
        }, ensure_ascii=False)
        self._file.write(line + "\n")
        # Explicit: the record must be in the file (for tail -f, for a crash) when write() returns.
        self._file.flush()

    def close(self) -> None:
        self._file.close()
