"""Which upstream serves a request: round robin over a model's replicas, skipping one that recently refused a
connection (it is tried again once DOWN_S has passed, or when every replica is down)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

# How long a replica that refused a connection is skipped: long enough not to pay a failed connect on every request
# to a dead replica, short enough that a restarted one is back in rotation within seconds.
DOWN_S = 5.0


STABLE, CANARY = "stable", "canary"  # the `version` label: which of a rollout's two versions served
# Names the version that answered; from llmctl's own key, also asks for one (a rollout's analysis load and evals).
VERSION_HEADER = "x-llmctl-version"


@dataclass
class Upstream:
    base_url: str  # ends in /v1
    version: str = STABLE
    chat_url: httpx.URL = field(init=False)
    completions_url: httpx.URL = field(init=False)
    models_url: httpx.URL = field(init=False)
    down_until: float = 0.0
    last_error: str | None = None
    # For monitoring, not routing: whether it answered its last health probe (None: not probed yet). A connection
    # a request found refused also sets it False, until the next probe.
    up: bool | None = None

    def __post_init__(self) -> None:
        base = self.base_url.rstrip("/")
        # Parsed once: building an httpx.URL from a string is measurable on every request.
        self.chat_url = httpx.URL(base + "/chat/completions")
        self.completions_url = httpx.URL(base + "/completions")
        self.models_url = httpx.URL(base + "/models")

    def mark_down(self, reason: str, now: float | None = None) -> None:
        self.down_until = (time.monotonic() if now is None else now) + DOWN_S
        self.last_error = reason
        self.up = False

    def mark_up(self) -> None:
        self.down_until = 0.0

    def healthy(self, now: float | None = None) -> bool:
        return self.down_until <= (time.monotonic() if now is None else now)


class Rotation:
    """The order to try a route's upstreams (one version's) in for one request."""

    def __init__(self, upstreams: list[Upstream]) -> None:
        self.upstreams = upstreams
        self._next = 0

    def any_healthy(self, now: float | None = None) -> bool:
        return any(upstream.healthy(now) for upstream in self.upstreams)

    def order(self) -> list[Upstream]:
        upstreams = self.upstreams
        if len(upstreams) == 1:
            return upstreams
        count = len(upstreams)
        now = time.monotonic()
        first = self._next
        for step in range(count):  # the next healthy one in turn, so the healthy replicas share the load evenly
            if upstreams[(self._next + step) % count].healthy(now):
                first = (self._next + step) % count
                break
        self._next = (first + 1) % count
        rotated = upstreams[first:] + upstreams[:first]
        healthy = [upstream for upstream in rotated if upstream.healthy(now)]
        if len(healthy) == count:
            return rotated
        # The ones marked down go last rather than not at all: a mark can be stale, and trying beats refusing.
        return healthy + [upstream for upstream in rotated if not upstream.healthy(now)]
