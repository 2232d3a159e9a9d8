"""Which version of a prompt a request is served when the prompt declares variants (an A/B test).

A caller is the request's `user` (OpenAI's end-user field), else the key it presented; each caller keeps the
version it was first given, across requests, gateway restarts and the gateway's processes (the ledger remembers it).
A request with neither is an anonymous caller and is served a version drawn by weight.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

from llmctl.config.schema import Prompt
from llmctl.gateway.spec import KeySpec

Assign = Callable[[str, str, list[tuple[int, int]]], int]  # (prompt, caller, [(version, weight)]) -> version


def caller_of(body: dict[str, Any], key: KeySpec | None) -> str | None:
    user = body.get("user")
    if isinstance(user, str) and user:
        return f"user:{user}"
    return f"key:{key.id}" if key is not None else None


class Variants:
    def __init__(self, assign: Assign) -> None:
        self._assign = assign
        self._known: dict[tuple[str, str], int] = {}  # (prompt, caller) -> version: the ledger once per caller

    def pick(self, prompt: Prompt, caller: str | None) -> Prompt:
        versions = prompt.versions()
        if len(versions) == 1:
            return prompt
        if caller is None:
            return random.choices([p for p, _ in versions], weights=[w for _, w in versions])[0]
        digest = hashlib.sha256(caller.encode("utf-8")).hexdigest()  # a `user` may be an email: store no value
        weights = [(p.version, w) for p, w in versions]
        version = self._known.get((prompt.name, digest))
        if version is None or version not in dict(weights):
            version = self._known[(prompt.name, digest)] = self._assign(prompt.name, digest, weights)
        return next(p for p, _ in versions if p.version == version)
