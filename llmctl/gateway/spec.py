"""What a running gateway enforces: one JSON file built by llmctl at apply time and read by the gateway process.

It is derived from the Desired config plus what apply learned (upstream ports) and never holds a secret in plain
text: API keys are sha256 hashes, hosted-API keys are named by the environment variable that holds them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PositiveFloat, PositiveInt

from llmctl.config.schema import Guardrail, Prompt

# The key llmctl's own load tests and evals send; its plain text lives only in a 0600 file beside the gateway's spec.
VERIFY_KEY_ID = "llmctl-verify"


class KeySpec(BaseModel):
    id: str = Field(description="The key's name in the config; what logs, metrics and the audit log show.")
    sha256: str | None = Field(None, description="hex sha256 of the key; the key itself is never written anywhere.")
    env: str | None = Field(None, description="Where the hash is not known when the spec is written (a cluster): "
                            "the environment variable holding the key, hashed once when the gateway starts.")
    models: list[str] | None = Field(None, description="Models this key may call; None: every model.")
    team: str | None = Field(None, description="The team its requests, tokens and spend are labelled with.")
    budgets: list[str] = Field(default_factory=list, description="Budgets its requests count against whatever the "
                               "model: its team's.")
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None


class Price(BaseModel):
    """USD per million tokens. For self-hosted models: the amortised cost of the serving hardware."""

    usd_per_1m_input: float
    usd_per_1m_output: float
    usd_per_1m_cached_input: float | None = Field(None, description="Input tokens the provider served from its "
                                                  "prompt cache (usage.prompt_tokens_details.cached_tokens), where "
                                                  "it bills them otherwise; None: at the input rate.")
    basis: str = Field(description="Where the figure comes from, e.g. 'catalog: openai gpt-4o-mini'.")


def priced_usd(price: Price, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> float:
    cached = min(cached_input_tokens, input_tokens) if price.usd_per_1m_cached_input is not None else 0
    return ((input_tokens - cached) * price.usd_per_1m_input + cached * (price.usd_per_1m_cached_input or 0.0)
            + output_tokens * price.usd_per_1m_output) / 1_000_000


class SloTargets(BaseModel):
    """A model's per-request SLO targets in seconds (None: not declared). A request is good (counts towards the
    goodput) when it succeeded within every one: the rule of `llmctl.verify.slo.meets_targets`, which the load test
    applies to what the client saw, applied here to what the gateway saw."""

    ttft_s: float | None = None
    latency_s: float | None = None
    itl_s: float | None = Field(None, description="Held against the largest gap between streamed text chunks.")

    def met(self, ttft: float | None, latency: float, itl: list[float]) -> bool:
        if self.ttft_s is not None and (ttft is None or ttft > self.ttft_s):
            return False
        if self.latency_s is not None and latency > self.latency_s:
            return False
        return self.itl_s is None or not itl or max(itl) <= self.itl_s


class TokenizerSpec(BaseModel):
    kind: Literal["gguf", "tokenizer_json"]
    path: str


class CanarySpec(BaseModel):
    """A new version of a model served beside the stable one to a share of callers, while a rollout decides."""

    upstreams: list[str] = Field(description="The new version's replicas: OpenAI base URLs ending in /v1.")
    upstream_model: str
    weight: int = Field(ge=0, le=100, description="Percent of callers sent to it.")
    prompt: Prompt | None = Field(None, description="The new version's prompt, when it differs from the route's (a "
                                  "prompt rollout: then `upstreams` are the route's own).")
    identity: str = Field("", description="What its upstreams serve, as the lock pins it.")


class RouteSpec(BaseModel):
    model: str = Field(description="The name clients send as `model`.")
    kind: Literal["replicas", "api"]
    upstreams: list[str] = Field(description="OpenAI base URLs ending in /v1, one per replica (or the hosted API).")
    upstream_model: str = Field(description="The `model` sent upstream.")
    api_key_env: str | None = Field(None, description="Environment variable holding the hosted API's key.")
    guardrails: list[Guardrail] = Field(default_factory=list, description="Applied in the order declared.")
    prompt: Prompt | None = None
    price: Price | None = Field(None, description="None: tokens are metered but cannot be priced (said at plan).")
    budgets: list[str] = Field(default_factory=list, description="Budgets this model's spend counts against.")
    tokenizer: TokenizerSpec | None = Field(None, description="None: the documented estimate counts tokens.")
    slo: SloTargets | None = Field(None, description="The targets of the model's SLO; None: it names none.")
    canary: CanarySpec | None = Field(None, description="A rollout's new version; None: the upstreams serve all.")
    identity: str = Field("", description="What the upstreams serve, as the lock pins it (source, file or commit): "
                          "a cached answer of another identity is never replayed.")


class BudgetSpec(BaseModel):
    name: str
    limit_usd: float
    period: Literal["day", "week", "month"]
    alert_at: list[float] = Field(default_factory=list)
    on_exceed: Literal["warn", "block"]


class SloThresholds(BaseModel):
    """Every threshold the config's SLOs declare, in seconds: each becomes a bucket boundary of its histogram, so
    "the share of requests over the threshold" is counted exactly, never interpolated between buckets."""

    request_seconds: list[float] = Field(default_factory=list, description="From latency_p95_ms.")
    ttft_seconds: list[float] = Field(default_factory=list, description="From ttft_p95_ms.")
    itl_seconds: list[float] = Field(default_factory=list, description="From itl_p95_ms.")


class CacheSpec(BaseModel):
    path: str = Field(description="SQLite file of the cached answers, beside the ledger.")
    ttl_s: PositiveFloat
    max_entries: PositiveInt


class FeedbackSpec(BaseModel):
    """How the gateway takes ratings: `thumbs` (up/down) or a numeric range, and for how long after an answer."""

    scale: Literal["thumbs", "range"] = "thumbs"
    min: float = -1.0
    max: float = 1.0
    negative_below: float = 0.0  # a score below this is negative (thumbs: down, -1)
    window_s: PositiveFloat = 7 * 86_400.0


class StoreSpec(BaseModel):
    """The database every replica of a gateway shares. The DSN is never here: the gateway reads it when it
    starts, from `dsn_env` or `dsn_file`."""

    kind: Literal["postgres"] = "postgres"
    dsn_env: str | None = Field(None, description="The environment variable holding the DSN.")
    dsn_file: str | None = Field(None, description="The file holding the DSN, on the gateway's machine.")
    pool_size: PositiveInt = 4
    failure: Literal["closed", "open"] = Field("closed", description="When the store is lost while serving: "
                                               "refuse requests (503), or serve and spool their metering.")


class GatewaySpec(BaseModel):
    routes: dict[str, RouteSpec]
    keys: list[KeySpec] = Field(default_factory=list, description="Empty: no key is required (said at plan).")
    budgets: dict[str, BudgetSpec] = Field(default_factory=dict)
    max_body_bytes: int = 1_048_576
    upstream_timeout_s: float = 120.0
    probe_interval_s: PositiveFloat = Field(5.0, description="How often each replica is probed for upstream_up.")
    slo_thresholds: SloThresholds = Field(default_factory=SloThresholds)
    db_path: str = Field(description="SQLite ledger of metered spend; survives restarts.")
    audit_path: str = Field(description="JSON-lines audit log.")
    feedback: FeedbackSpec = Field(default_factory=FeedbackSpec)
    cache: CacheSpec | None = None
    store: StoreSpec | None = Field(None, description="None: the ledger is the SQLite file `db_path`, this "
                                    "gateway's alone.")
    spool_dir: str | None = Field(None, description="Where a gateway on a store spools metering the store could "
                                  "not take, one file per process, until it can.")

    def reloadable_to(self, other: "GatewaySpec") -> bool:
        """Whether a running gateway can take `other` in place (SIGHUP) rather than restart: what it opened or
        sized at start is the same."""
        fixed = {"db_path", "audit_path", "slo_thresholds", "upstream_timeout_s", "probe_interval_s", "cache",
                 "store", "spool_dir"}
        return self.model_dump(include=fixed) == other.model_dump(include=fixed)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> "GatewaySpec":
        return cls.model_validate_json(path.read_text())
