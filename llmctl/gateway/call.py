"""One request on its way through the gateway: the route that serves it, what the audit log, the ledger and the
metrics are told about it, and the tokens it is metered for."""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from llmctl.config.schema import Guardrail, Prompt
from llmctl.gateway.audit import prompt_sha256
from llmctl.gateway.guardrails import Action, Verdict
from llmctl.gateway.inputs import ClientRequest, Kind, Texts
from llmctl.gateway.routing import STABLE, VERSION_HEADER, Rotation
from llmctl.gateway.spec import KeySpec, RouteSpec
from llmctl.gateway.tokens import TokenCounter

EMPTY_SHA256 = prompt_sha256("")


@dataclass
class Route:
    """A route with what serving it needs, built once at startup."""

    spec: RouteSpec
    rotation: Rotation
    canary: Rotation | None  # a rollout's new version, beside `rotation`
    prompt_versions: list[tuple[Prompt, int]]  # the prompt's own and its variants, with weights; built once
    canary_prompt_versions: list[tuple[Prompt, int]]  # ... of a rollout's new prompt; empty: the same as stable's
    generation: str  # what the route serves (identities, prompts, guardrails): its cached answers are this one's
    counter: TokenCounter
    input_guards: list[Guardrail]  # the route's guardrails whose input part checks something
    output_guards: list[Guardrail]  # ... and whose output part does
    max_tokens: int | None  # the smallest output.max_tokens of its guardrails

    def rotation_of(self, version: str) -> Rotation:
        return self.canary if version != STABLE and self.canary is not None else self.rotation

    def prompt_of(self, version: str) -> tuple[Prompt | None, list[tuple[Prompt, int]]]:
        """The prompt a version renders, with its versions (an A/B test's arms)."""
        if version != STABLE and self.canary_prompt_versions:
            return self.canary_prompt_versions[0][0], self.canary_prompt_versions
        return self.spec.prompt, self.prompt_versions

    def upstream_model_of(self, version: str) -> str:
        canary = self.spec.canary
        return canary.upstream_model if version != STABLE and canary is not None else self.spec.upstream_model


@dataclass
class Call:
    """One request on its way through the gateway: what the audit log, the ledger and the metrics are told."""

    started: float  # time.perf_counter()
    kind: Kind
    # What the client rates the answer by (x-request-id); 96 random bits, so ids cannot be guessed.
    request_id: str = field(default_factory=lambda: "req-" + secrets.token_hex(12))
    answer_id: str | None = None  # the id in the answer's body, as the upstream set it (also accepted by feedback)
    cache: str | None = None  # hit | miss | bypass; None: the gateway has no cache
    cache_key: str | None = None  # where its answer is (hit) or goes (miss, unless the client said no-store)
    cache_store: bool = False  # miss: store the answer once it is complete
    answer: dict[str, Any] | None = None  # the whole answer as the client got it, for the cache
    key: KeySpec | None = None
    route: Route | None = None
    request: ClientRequest | None = None
    texts: Texts | None = None
    prompt_sha256: str = EMPTY_SHA256
    prompt_version: int | None = None  # the version of the model's prompt rendered, when one was
    version: str = STABLE  # which of a rollout's versions serves it (stable when there is no rollout)
    actions: dict[Action, None] = field(default_factory=dict)  # ordered set: each rule/action once per request
    forwarded: bool = False  # an upstream accepted the request: tokens are being spent
    ttft: float | None = None
    itl: list[float] = field(default_factory=list)  # each gap between streamed text chunks after the first
    last_text_at: float = 0.0  # time.perf_counter() when the last streamed text arrived
    upstream_failures: list[str] = field(default_factory=list)  # why upstream calls failed: connect, timeout, ...

    @property
    def budgets(self) -> list[str]:
        """What its spend counts against: the model's budgets, then its key's team's."""
        found = list(self.route.spec.budgets) if self.route else []
        return found + [b for b in (self.key.budgets if self.key else []) if b not in found]

    def note(self, verdict: Verdict) -> None:
        for action in verdict.actions:
            self.actions[action] = None

    def text_arrived(self, at: float) -> None:
        """Streamed text arrived at `at` (time.perf_counter()): the first sets the ttft, each later one a gap."""
        if self.ttft is None:
            self.ttft = at - self.started
        else:
            self.itl.append(at - self.last_text_at)
        self.last_text_at = at

    def headers(self) -> list[tuple[bytes, bytes]]:
        """What the answer tells the client about how it was served: its id (to rate it by), the prompt version
        (an A/B test's arm), and while a rollout runs, which of its versions answered."""
        found = [(b"x-request-id", self.request_id.encode())]
        if self.prompt_version:
            found.append((b"x-llmctl-prompt-version", str(self.prompt_version).encode()))
        if self.route is not None and self.route.spec.canary is not None:
            found.append((VERSION_HEADER.encode(), self.version.encode()))
        if self.cache is not None:
            found.append((b"x-llmctl-cache", self.cache.encode()))
        return found


def slo_outcome(call: Call, status: int, seconds: float) -> bool | None:
    """Whether a request to a model with an SLO was good (succeeded within every per-request target) or bad (failed,
    or missed one); None when it does not count: no SLO, or refused for the client's own doing (a 4xx: its key, its
    limits, its budget, its input; a guardrail's block, even mid-stream; a client that hung up)."""
    slo = call.route.spec.slo if call.route else None
    if slo is None or 400 <= status < 500 or any(action.action == "block" for action in call.actions):
        return None
    if status >= 500:
        return False
    streamed = call.request is not None and call.request.stream
    # A whole answer's first token reaches the client with the rest of it.
    return slo.met(call.ttft if streamed else seconds, seconds, call.itl)


def cached_input_tokens(usage: Any) -> int:
    """The input tokens the provider says it served from its prompt cache (OpenAI's usage shape), else 0."""
    details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return cached if isinstance(cached, int) and cached > 0 else 0


def metered_tokens(call: Call, usage: Any, output: list[str]) -> tuple[int, int]:
    """(input, output) tokens: the upstream's usage where it gave one, else the route's counter on the texts sent
    and received (llama-cpp-python's server sends no usage in streams). The counter sees the texts, not the chat
    template the server wraps them in, so a counted prompt is short by the template's tokens."""
    assert call.route is not None
    counter = call.route.counter
    given = usage if isinstance(usage, dict) else {}
    prompt, completion = given.get("prompt_tokens"), given.get("completion_tokens")
    if not isinstance(prompt, int) or prompt < 0:
        prompt = counter.count(call.texts.text()) if call.texts else 0
    if not isinstance(completion, int) or completion < 0:
        completion = counter.count("".join(output)) if output else 0
    return prompt, completion

