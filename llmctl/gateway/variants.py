"""Which version a request is served: of a prompt that declares variants (an A/B test), and of a model that a
rollout is moving to a new version (a canary).

A caller is the request's `user` (OpenAI's end-user field), else the key it presented; each caller keeps the
prompt version it was first given, across requests, gateway restarts and the gateway's processes (the ledger
remembers it). A caller's canary share is a hash bucket instead: as a rollout raises the weight, callers only ever
move from the stable version to the new one, never back and forth. A request with neither is anonymous and is
served a version drawn by weight.
"""
from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from llmctl.config.schema import Prompt
from llmctl.gateway.call import Route
from llmctl.gateway.routing import CANARY, STABLE, VERSION_HEADER
from llmctl.gateway.spec import VERIFY_KEY_ID, KeySpec
from llmctl.gateway.store import StoreError

log = logging.getLogger("llmctl.gateway")

Assign = Callable[[str, str, list[tuple[int, int]]], int]  # (prompt, caller, [(version, weight)]) -> version
# Callers remembered in memory before the ledger is asked again: bounds the memory of a gateway with many users.
KNOWN_CALLERS = 100_000


def caller_of(body: dict[str, Any], key: KeySpec | None) -> str | None:
    user = body.get("user")
    if isinstance(user, str) and user:
        return f"user:{user}"
    return f"key:{key.id}" if key is not None else None


class Variants:
    def __init__(self, assign: Assign) -> None:
        self._assign = assign
        self._known: dict[tuple[str, str], int] = {}  # (prompt, caller) -> version: the ledger once per caller

    def pick(self, versions: list[tuple[Prompt, int]], caller: str | None) -> Prompt:
        """One of a prompt's `versions` (Prompt.versions(): the prompt's own first, with their weights)."""
        if len(versions) == 1:
            return versions[0][0]
        if caller is None:
            return _drawn(versions)
        name = versions[0][0].name
        digest = hashlib.sha256(caller.encode("utf-8")).hexdigest()  # a `user` may be an email: store no value
        weights = [(p.version, w) for p, w in versions]
        version = self._known.get((name, digest))
        if version is None or version not in dict(weights):
            if len(self._known) >= KNOWN_CALLERS:
                self._known.clear()
            try:
                version = self._known[(name, digest)] = self._assign(name, digest, weights)
            except StoreError:  # the request is served all the same; the caller is assigned on a later one
                log.exception("the ledger could not assign a version of prompt %s", name)
                return _drawn(versions)
        return next(p for p, _ in versions if p.version == version)


def _drawn(versions: list[tuple[Prompt, int]]) -> Prompt:
    return random.choices([p for p, _ in versions], weights=[w for _, w in versions])[0]


def pinned_version(request: Request, route: Route, key: KeySpec | None) -> str | None:
    """The version a request names in VERSION_HEADER, honoured from llmctl's own key only (a rollout drives its
    analysis load and evals at one version so): no client can choose the version it is served. A gateway with no
    keys has no such key, and honours it from anyone, as it serves anyone everything."""
    asked = request.headers.get(VERSION_HEADER)
    if asked not in (STABLE, CANARY) or route.spec.canary is None or (key is not None and key.id != VERIFY_KEY_ID):
        return None
    return asked


def version_of(route: Route, caller: str | None) -> str:
    """Stable or canary. A version with no healthy replica is not chosen while the other has one: a rollout never
    routes to a version that is down."""
    canary = route.spec.canary
    if canary is None or route.canary is None or canary.weight == 0:
        return STABLE
    if caller is None:
        chosen = CANARY if random.random() * 100 < canary.weight else STABLE
    else:
        bucket = int(hashlib.sha256(f"{route.spec.model}\0{caller}".encode("utf-8")).hexdigest()[:8], 16) % 100
        chosen = CANARY if bucket < canary.weight else STABLE
    if not route.rotation_of(chosen).any_healthy():
        other = STABLE if chosen == CANARY else CANARY
        if route.rotation_of(other).any_healthy():
            return other
    return chosen
