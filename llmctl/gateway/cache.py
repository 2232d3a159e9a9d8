"""The response cache: an answer to a deterministic request, replayed for the same request from the same tenant.

Only what would come back the same is cached: temperature 0 or a `seed`, one choice, and no stream option but
usage (which a replay can give). The key holds everything that could change the answer or who may see it: the
tenant (the key's team, else the key; never shared across them), the model version's identity (its lock entry),
the prompt versions and guardrail policy of the route, and the request with its delivery fields (stream, the
end user) left out, so a streamed request can be answered from a whole one and the other way round. What is
stored is what the client was sent, after the output guardrails, so a replay needs none of them again.

Entries live in the gateway's store: a SQLite file beside the ledger, or the PostgreSQL database its replicas share
(so an answer one replica stored is replayed by the others). They are bounded in count (the least recently used go
first; each replica trims when it finds the bound passed) and in age. An entry whose model version, prompts or
guardrails are no longer served is dropped when the gateway takes its spec.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from typing import Any

from llmctl.gateway.inputs import Kind
from llmctl.gateway.store import Migration, Store

# Fields that say how an answer is delivered, not what it is.
_DELIVERY = ("stream", "stream_options", "user")
_REPLAYABLE_STREAM_OPTIONS = {"include_usage"}
_TABLE = """
CREATE TABLE IF NOT EXISTS cache_entries (
    key TEXT PRIMARY KEY,            -- sha256 of tenant, generation and request
    model TEXT NOT NULL,
    generation TEXT NOT NULL,        -- what the route served when it was stored (see Route.generation)
    stored REAL NOT NULL,            -- epoch seconds
    used REAL NOT NULL,
    answer TEXT NOT NULL             -- the answer as the client got it, as JSON
);
CREATE INDEX IF NOT EXISTS cache_entries_by_use ON cache_entries (used);
"""
# Before migrations the table was `entries`: a cache, so the old one is dropped rather than carried over.
MIGRATIONS = (Migration(sqlite="DROP TABLE IF EXISTS entries;" + _TABLE,
                        postgres=_TABLE.replace(" REAL", " DOUBLE PRECISION")),)


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
    def __init__(self, store: Store, ttl_s: float, max_entries: int, own_store: bool = False) -> None:
        """`own_store`: the cache's store is its own (a SQLite file), closed with it; else the ledger's."""
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self.store, self._own_store = store, own_store
        store.migrate("cache", MIGRATIONS)
        self._count = self._counted()

    def __str__(self) -> str:
        return self.store.where

    def _counted(self) -> int:
        return int(self.store.query("SELECT COUNT(*) FROM cache_entries")[0][0])

    def get(self, key: str) -> dict[str, Any] | None:
        now = time.time()
        rows = self.store.query("SELECT answer FROM cache_entries WHERE key = ? AND stored > ?",
                                (key, now - self.ttl_s))
        if not rows:
            return None
        self.store.query("UPDATE cache_entries SET used = ? WHERE key = ?", (now, key))
        answer: dict[str, Any] = json.loads(rows[0][0])
        return answer

    def put(self, key: str, model: str, generation: str, answer: dict[str, Any]) -> None:
        now = time.time()
        text = json.dumps(answer, ensure_ascii=False)
        with self.store.transaction() as tx:
            added = tx.execute("INSERT INTO cache_entries VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                               (key, model, generation, now, now, text)).rowcount
            if not added:  # an expired entry under the same key (or another replica's): replaced, the count stays
                tx.execute("UPDATE cache_entries SET stored = ?, used = ?, answer = ? WHERE key = ?",
                           (now, now, text, key))
                return
        self._count += 1
        if self._count > self.max_entries:
            # The expired first, then the least recently used, down to the bound.
            with self.store.transaction() as tx:
                tx.execute("DELETE FROM cache_entries WHERE stored <= ?", (now - self.ttl_s,))
                excess = int(tx.execute("SELECT COUNT(*) FROM cache_entries").fetchone()[0]) - self.max_entries
                if excess > 0:
                    tx.execute("DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries ORDER BY used "
                               "LIMIT ?)", (excess,))
            self._count = self._counted()

    def evict(self, key: str) -> None:
        with self.store.transaction() as tx:
            self._count -= tx.execute("DELETE FROM cache_entries WHERE key = ?", (key,)).rowcount

    def keep_only(self, served: Iterable[tuple[str, str]]) -> int:
        """Drop every entry but those of the (model, generation) pairs served now; returns how many went."""
        pairs = list(served)
        keep = " OR ".join("(model = ? AND generation = ?)" for _ in pairs) or "1 = 0"
        with self.store.transaction() as tx:
            gone = int(tx.execute(f"DELETE FROM cache_entries WHERE NOT ({keep})",
                                  [value for pair in pairs for value in pair]).rowcount)
        self._count -= gone
        return gone

    def close(self) -> None:
        if self._own_store:
            self.store.close()


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
