"""The response cache: an answer to a deterministic request, replayed for the same request from the same tenant.

Only what would come back the same is cached: temperature 0 or a `seed`, one choice, and no stream option but
usage (which a replay can give). The key holds everything that could change the answer or who may see it: the
tenant (the key's team, else the key; never shared across them), the model version's identity (its lock entry),
the prompt versions and guardrail policy of the route, and the request with its delivery fields (stream, the
end user) left out, so a streamed request can be answered from a whole one and the other way round. What is
stored is what the client was sent, after the output guardrails, so a replay needs none of them again.

Entries live in a SQLite file beside the ledger, bounded in count (the least recently used go first) and in age.
An entry whose model version, prompts or guardrails are no longer served is dropped when the gateway takes its spec.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llmctl.gateway.inputs import Kind

# Fields that say how an answer is delivered, not what it is.
_DELIVERY = ("stream", "stream_options", "user")
_REPLAYABLE_STREAM_OPTIONS = {"include_usage"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,            -- sha256 of tenant, generation and request
    model TEXT NOT NULL,
    generation TEXT NOT NULL,        -- what the route served when it was stored (see Route.generation)
    stored REAL NOT NULL,            -- epoch seconds
    used REAL NOT NULL,
    answer TEXT NOT NULL             -- the answer as the client got it, as JSON
);
CREATE INDEX IF NOT EXISTS entries_by_use ON entries (used);
"""


def cacheable(body: dict[str, Any]) -> bool:
    """Whether the answer to `body` is a function of the request alone."""
    if body.get("temperature") != 0 and body.get("seed") is None:
        return False
    if body.get("n", 1) != 1:
        return False
    options = body.get("stream_options")
    return options is None or (isinstance(options, dict) and set(options) <= _REPLAYABLE_STREAM_OPTIONS)


def cache_key(tenant: str, generation: str, version: str, kind: Kind, body: dict[str, Any]) -> str:
    """`version`: which of a rollout's versions answers (their models differ)."""
    request = {name: value for name, value in body.items() if name not in _DELIVERY}
    text = json.dumps([tenant, generation, version, kind, request], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path, ttl_s: float, max_entries: int) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def get(self, key: str) -> dict[str, Any] | None:
        now = time.time()
        row = self._db.execute("SELECT answer FROM entries WHERE key = ? AND stored > ?",
                               (key, now - self.ttl_s)).fetchone()
        if row is None:
            return None
        self._db.execute("UPDATE entries SET used = ? WHERE key = ?", (now, key))
        answer: dict[str, Any] = json.loads(row[0])
        return answer

    def put(self, key: str, model: str, generation: str, answer: dict[str, Any]) -> None:
        now = time.time()
        added = self._db.execute("INSERT OR IGNORE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                                 (key, model, generation, now, now, json.dumps(answer, ensure_ascii=False))).rowcount
        if not added:  # an expired entry under the same key: replaced, the count stays
            self._db.execute("UPDATE entries SET stored = ?, used = ?, answer = ? WHERE key = ?",
                             (now, now, json.dumps(answer, ensure_ascii=False), key))
            return
        self._count += 1
        if self._count > self.max_entries:
            # The expired first, then the least recently used, down to the bound.
            self._db.execute("DELETE FROM entries WHERE stored <= ?", (now - self.ttl_s,))
            self._db.execute("DELETE FROM entries WHERE key IN (SELECT key FROM entries ORDER BY used LIMIT "
                             "MAX((SELECT COUNT(*) FROM entries) - ?, 0))", (self.max_entries,))
            self._count = self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def evict(self, key: str) -> None:
        self._count -= self._db.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount

    def keep_only(self, served: Iterable[tuple[str, str]]) -> int:
        """Drop every entry but those of the (model, generation) pairs served now; returns how many went."""
        pairs = list(served)
        keep = " OR ".join("(model = ? AND generation = ?)" for _ in pairs) or "0"
        gone = self._db.execute(f"DELETE FROM entries WHERE NOT ({keep})",
                                [value for pair in pairs for value in pair]).rowcount
        self._count -= gone
        return gone

    def close(self) -> None:
        self._db.close()


def replay(answer: dict[str, Any], request_id: str, stream: bool, include_usage: bool) -> bytes:
    """The stored answer as a new one: its own id and time, whole or as the events of a stream."""
    fresh = {**answer, "id": request_id, "created": int(time.time())}
    if not stream:
        return json.dumps(fresh, ensure_ascii=False).encode()
    chat = fresh.get("object") == "chat.completion"
    envelope = {"id": request_id, "object": "chat.completion.chunk" if chat else "text_completion",
                "created": fresh["created"], "model": fresh.get("model")}
    events = []
    for choice in fresh.get("choices", []):
        index = choice.get("index", 0)
        if chat:
            message = choice.get("message") or {}
            events.append({"index": index, "delta": {"role": message.get("role", "assistant")}, "finish_reason": None})
            events.append({"index": index, "delta": {k: v for k, v in message.items() if k != "role"},
                           "finish_reason": None})
        else:
            events.append({"index": index, "text": choice.get("text", ""), "finish_reason": None})
        events.append({"index": index, **({"delta": {}} if chat else {"text": ""}),
                       "finish_reason": choice.get("finish_reason", "stop")})
    lines = [{**envelope, "choices": [event]} for event in events]
    if include_usage and fresh.get("usage") is not None:
        lines.append({**envelope, "choices": [], "usage": fresh["usage"]})
    return b"".join(b"data: " + json.dumps(line, ensure_ascii=False).encode() + b"\n\n" for line in lines) + \
        b"data: [DONE]\n\n"


def answer_output(answer: dict[str, Any], kind: Kind) -> list[str]:
    """The answer's texts, as the metering and the audit see an answer's output."""
    found = []
    for choice in answer.get("choices", []):
        text = (choice.get("message") or {}).get("content") if kind == "chat" else choice.get("text")
        if isinstance(text, str):
            found.append(text)
    return found
