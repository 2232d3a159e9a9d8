"""Access control: which key is calling, may it call this model, and is it within its per-minute limits."""
from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmctl.gateway.spec import KeySpec

if TYPE_CHECKING:
    from llmctl.gateway.metering import Ledger

WINDOW_S = 60.0


def hash_key(raw: str) -> str:
    """The form a key is stored in (KeySpec.sha256): sha256 hex of its UTF-8 bytes."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def hashed(keys: list[KeySpec], environ: Mapping[str, str]) -> list[KeySpec]:
    """Every key as a hash. A key named by environment variable (a gateway in a cluster, whose keys live in a
    Secret) is read from `environ` and hashed here, once, at start; a variable that is not set is a ValueError."""
    found = []
    for key in keys:
        if key.sha256 is None:
            value = environ.get(key.env or "", "").strip()
            if not value:
                raise ValueError(f"key '{key.id}': environment variable {key.env} is not set")
            key = key.model_copy(update={"sha256": hash_key(value), "env": None})
        found.append(key)
    return found


class KeyRing:
    def __init__(self, keys: list[KeySpec]) -> None:
        # Lower-cased so a hash written in upper case by hand still matches hexdigest()'s output.
        self._keys = [(key.sha256.lower().encode("ascii"), key) for key in keys if key.sha256]

    def authenticate(self, raw: str | None) -> KeySpec | None:
        """The key whose hash matches, or None. Every stored hash is compared, in constant time each, so the
        time taken does not tell a caller how far down the list (or whether) a match was found."""
        if not raw:
            return None
        presented = hash_key(raw).encode("ascii")
        found: KeySpec | None = None
        for digest, key in self._keys:
            if hmac.compare_digest(digest, presented):
                found = key
        return found


def allowed(key: KeySpec, model: str) -> bool:
    return key.models is None or model in key.models


@dataclass
class _Window:
    """One key's events in the last WINDOW_S seconds, oldest first."""

    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_total: int = 0

    def expire(self, now: float) -> None:
        # An event at t counts while now - t < WINDOW_S; popping from the left is amortised O(1).
        cutoff = now - WINDOW_S
        while self.requests and self.requests[0] <= cutoff:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= cutoff:
            self.token_total -= self.tokens.popleft()[1]

    def request_wait(self, limit: int, now: float) -> float | None:
        """Seconds until fewer than `limit` requests remain in the window, or None if that is already so."""
        excess = len(self.requests) - limit
        if excess < 0:
            return None
        return self.requests[excess] + WINDOW_S - now

    def token_wait(self, limit: int, now: float) -> float | None:
        """Seconds until the window's token total drops below `limit`, or None if it already has."""
        return _wait(self.tokens, self.token_total, limit, now)


def _wait(entries: Iterable[tuple[float, int]], total: int, limit: int, now: float) -> float | None:
    """Seconds until `total`, the sum of (time, amount) `entries` (oldest first) still in the window, drops below
    `limit` as they leave it; None if it already is below. Walks only the oldest entries whose expiry is needed."""
    remaining = total
    if remaining < limit:
        return None
    for at, n in entries:
        remaining -= n
        if remaining < limit:
            return at + WINDOW_S - now
    raise AssertionError("the total disagrees with the entries it sums")


def _retry_after(key: KeySpec, request_wait: Callable[[int], float | None],
                 token_wait: Callable[[int], float | None]) -> int | None:
    """None when `key` may make a request now; else the Retry-After in whole seconds (rounded up, at least 1), from
    the seconds each of its limits needs (`*_wait(limit)`, None when that limit is not reached)."""
    waits = [wait for wait in (
        None if key.requests_per_minute is None else request_wait(key.requests_per_minute),
        None if key.tokens_per_minute is None else token_wait(key.tokens_per_minute),
    ) if wait is not None]
    return max(1, math.ceil(max(waits))) if waits else None


class RateLimiter:
    """Per-key requests/min and tokens/min over a rolling 60 s window, as a sliding log.

    A sliding log rather than a token bucket: a full bucket plus its refill admits up to twice the limit within one
    60 s span, while the log never admits more than the limit in any 60 s span, which is what "per minute" promises;
    and Retry-After is exact, the moment the oldest entry that blocks leaves the window. Memory per key is bounded
    by the limit: refused requests are not logged, so at most requests_per_minute timestamps are kept.

    Tokens are known only after the response, so add_tokens() logs them then; admit() refuses while the window's
    total has reached the limit (requests in flight may overshoot it by their own size, once).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, key: KeySpec, now: float | None = None) -> int | None:
        """None: admitted (and counted). Otherwise the Retry-After in whole seconds (rounded up, at least 1)."""
        if key.requests_per_minute is None and key.tokens_per_minute is None:
            return None
        now = self._clock() if now is None else now
        window = self._window(key.id, now)
        retry_after = _retry_after(key, lambda limit: window.request_wait(limit, now),
                                   lambda limit: window.token_wait(limit, now))
        if retry_after is None and key.requests_per_minute is not None:
            window.requests.append(now)
        return retry_after

    def add_tokens(self, key: KeySpec, n: int, now: float | None = None) -> None:
        if key.tokens_per_minute is None or n <= 0:
            return
        now = self._clock() if now is None else now
        window = self._window(key.id, now)
        window.tokens.append((now, n))
        window.token_total += n

    def _window(self, key_id: str, now: float) -> _Window:
        window = self._windows.get(key_id)
        if window is None:
            window = self._windows[key_id] = _Window()
        window.expire(now)
        return window


class SharedRateLimiter:
    """The same sliding window, kept in a store that every replica of a gateway shares, so a key limited to N
    requests a minute gets N in total however many replicas serve it. It counts in one-second buckets (a busy key's
    window is at most 61 rows to read, where a log would be every request of the minute), each counted until its
    whole second has left the window: never more than the limit in any 60 s, at the price of a Retry-After up to a
    second later than the log's. The clock is the wall clock: replicas on different hosts must agree on it (NTP's
    milliseconds are well inside a 60 s window)."""

    def __init__(self, ledger: "Ledger", clock: Callable[[], float] = time.time) -> None:
        self._ledger = ledger
        self._clock = clock

    def admit(self, key: KeySpec, now: float | None = None) -> int | None:
        if key.requests_per_minute is None and key.tokens_per_minute is None:
            return None
        now = self._clock() if now is None else now

        def retry_after(requests: list[tuple[float, int]], tokens: list[tuple[float, int]]) -> int | None:
            return _retry_after(key, lambda limit: _wait(requests, sum(n for _, n in requests), limit, now),
                                lambda limit: _wait(tokens, sum(n for _, n in tokens), limit, now))

        return self._ledger.admit(key.id, now, now - WINDOW_S, retry_after,
                                  count_request=key.requests_per_minute is not None)

    def add_tokens(self, key: KeySpec, n: int, now: float | None = None) -> None:
        if key.tokens_per_minute is None or n <= 0:
            return
        self._ledger.add_tokens(key.id, self._clock() if now is None else now, n)
