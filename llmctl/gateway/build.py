"""The gateway's runtime spec from the Desired config and what apply learned: upstream URLs, key hashes, prices.

Data flow: the local provider calls `build_spec` at apply, once its model servers answer, and writes the result
beside its other run files; the gateway process only ever reads that file.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmctl.checks import Check
from llmctl.config.schema import Gateway, GatewayKey, GatewayStore, Model, Slo, duration_seconds
from llmctl.desired import Desired
from llmctl.errors import LlmctlError
from llmctl.gateway.auth import hash_key
from llmctl.gateway.store import read_dsn
from llmctl.gateway.spec import (
    BudgetSpec,
    CacheSpec,
    CanarySpec,
    FeedbackSpec,
    GatewaySpec,
    KeySpec,
    Price,
    RouteSpec,
    SloTargets,
    SloThresholds,
    StoreSpec,
    VERIFY_KEY_ID,
    TokenizerSpec,
)

if TYPE_CHECKING:
    from llmctl.lock import ModelLock
    from llmctl.resolve import Resolved

VERIFY_KEY_FILE = "llmctl.key"
# OpenAI-compatible defaults per hosted provider; any other provider needs `api_base` and `api_key_env`.
API_DEFAULTS = {"openai": ("https://api.openai.com/v1", "OPENAI_API_KEY")}


@dataclass(frozen=True)
class Upstream:
    urls: list[str]  # OpenAI base URLs ending in /v1, one per replica
    served_name: str
    tokenizer: TokenizerSpec | None = None


def gateway_dir(run_dir: Path) -> Path:
    return run_dir / "gateway"


def read_verify_key(run_dir: Path) -> str | None:
    path = gateway_dir(run_dir) / VERIFY_KEY_FILE
    return path.read_text().strip() if path.exists() else None


def settings(desired: Desired) -> Gateway:
    return desired.gateway or Gateway()


def routed(desired: Desired, local_targets: set[str]) -> list[str]:
    """The models a gateway on this machine fronts: those on its local targets and every hosted one."""
    return sorted(name for name, model in desired.models.items()
                  if model.target in local_targets or model.parsed_source.hosted)


def build_spec(resolved: Resolved, upstreams: dict[str, Upstream], directory: Path,
               verify_key_sha: str | None = None, keys_from_env: bool = False,
               hosted: bool = True, canaries: dict[str, Upstream] | None = None,
               dsn_from_env: bool = False) -> GatewaySpec:
    """`canaries`: the running replicas of the new versions a rollout serves beside `upstreams`, at the weight
    `desired.canaries` gives each.
    `keys_from_env`: for a gateway whose keys are not readable here (a cluster's Secret), each key is named by
    the environment variable the gateway will find it in (`cluster_key_env`) and hashed when it starts.
    `hosted`: whether it also routes the api:// models (a gateway on one model's instances does not).
    `dsn_from_env`: the store's DSN reaches the gateway in the variable `store_dsn_env` names (a cluster's Secret,
    an instance's SSM parameter), not from the file the config names."""
    desired = resolved.desired
    gateway = settings(desired)
    priced = prices(resolved)
    routes = {}
    for name, model in desired.models.items():
        source = model.parsed_source
        common = dict(model=name, identity=identity(resolved, model),
                      guardrails=[desired.guardrails[g] for g in model.guardrails],
                      prompt=desired.prompts.get(model.prompt or ""), price=priced.get(name),
                      budgets=desired.budgets_of(name), slo=_targets(desired.slos[model.slo]) if model.slo else None)
        if source.hosted and hosted:
            provider, _, remote = source.location.partition("/")
            base, key_env = API_DEFAULTS.get(provider, (None, None))
            routes[name] = RouteSpec(kind="api", upstreams=[(model.api_base or base or "").rstrip("/")],
                                     upstream_model=remote, api_key_env=model.api_key_env or key_env, **common)
        elif name in upstreams:
            upstream = upstreams[name]
            routes[name] = RouteSpec(kind="replicas", upstreams=upstream.urls, upstream_model=upstream.served_name,
                                     tokenizer=upstream.tokenizer, canary=_canary(desired, name, upstream,
                                                                                  (canaries or {}).get(name)),
                                     **common)
    team_budgets = {team.name: [team.budget] for team in gateway.teams if team.budget}
    keys = [_key_spec(key, desired.config_dir, keys_from_env, team_budgets.get(key.team or "", []))
            for key in gateway.keys]
    if verify_key_sha and keys:
        keys.append(KeySpec(id=VERIFY_KEY_ID, sha256=verify_key_sha))
    budgets = {name: BudgetSpec(name=name, limit_usd=b.limit_usd, period=b.period, alert_at=b.alert_at,
                                on_exceed=b.on_exceed) for name, b in desired.budgets.items()}
    targets = [route.slo for route in routes.values() if route.slo is not None]
    thresholds = SloThresholds(request_seconds=_declared(t.latency_s for t in targets),
                               ttft_seconds=_declared(t.ttft_s for t in targets),
                               itl_seconds=_declared(t.itl_s for t in targets))
    cache = CacheSpec(path=str(directory / "cache.sqlite"), ttl_s=duration_seconds(gateway.cache.ttl),
                      max_entries=gateway.cache.max_entries) if gateway.cache else None
    scale = gateway.feedback.scale
    feedback = FeedbackSpec(window_s=duration_seconds(gateway.feedback.window)) if scale == "thumbs" else FeedbackSpec(
        scale="range", min=scale.min, max=scale.max, negative_below=scale.threshold,
        window_s=duration_seconds(gateway.feedback.window))
    return GatewaySpec(routes=routes, keys=keys, budgets=budgets, max_body_bytes=gateway.max_request_bytes,
                       feedback=feedback, cache=cache, store=store_spec(gateway, desired.config_dir, dsn_from_env),
                       spool_dir=str(directory / "spool") if gateway.store else None,
                       slo_thresholds=thresholds,
                       upstream_timeout_s=duration_seconds(gateway.upstream_timeout),
                       db_path=str(directory / LEDGER_FILE), audit_path=str(directory / "audit.jsonl"))


def identity(resolved: Resolved, model: Model) -> str:
    """What a route's upstreams serve, as pinned: a cached answer is replayed only for the same."""
    return _identity(model, resolved.locked(model.name))


def _identity(model: Model, locked: ModelLock | None) -> str:
    pinned = [model.source, model.engine, model.engine_args, model.context_length, model.api_base,
              locked.model_dump(mode="json") if locked else None]
    return hashlib.sha256(json.dumps(pinned, sort_keys=True, default=str).encode()).hexdigest()


def _canary(desired: Desired, name: str, stable: Upstream, new: Upstream | None) -> CanarySpec | None:
    """A rollout's new version of the model: its own replicas, or for a prompt rollout the stable ones."""
    canary = desired.canaries.get(name)
    serving = stable if canary is not None and not canary.servers else new
    if canary is None or serving is None:
        return None
    return CanarySpec(upstreams=serving.urls, upstream_model=serving.served_name, weight=canary.weight,
                      prompt=canary.prompt, identity=_identity(canary.model, canary.lock))


STORE_DSN_ENV = "LLMCTL_STORE_DSN"
LEDGER_FILE = "spend.sqlite"  # a gateway's own ledger, in its directory


def store_dsn_env(store: GatewayStore) -> str:
    """The variable a gateway away from this machine reads the store's DSN from: the config's `env`, else ours."""
    return store.env or STORE_DSN_ENV


def store_spec(gateway: Gateway, config_dir: Path, dsn_from_env: bool) -> StoreSpec | None:
    store = gateway.store
    if store is None:
        return None
    if dsn_from_env or store.file is None:
        source = {"dsn_env": store_dsn_env(store)}
    else:
        source = {"dsn_file": str((config_dir / store.file).resolve())}
    return StoreSpec(pool_size=store.pool_size, failure=gateway.store_failure, **source)


def cluster_key_env(key: GatewayKey) -> str:
    """The variable a gateway in a cluster reads a key from: the config's `env`, or one named after the key."""
    return key.env or "LLMCTL_KEY_" + "".join(c if c.isalnum() else "_" for c in key.name.upper())


def key_problems(desired: Desired) -> list[str]:
    """The declared keys that cannot be read here (a variable not set, a file missing or empty)."""
    found = []
    for key in settings(desired).keys:
        try:
            read_key(key, desired.config_dir)
        except LlmctlError as exc:
            found.append(str(exc))
    return found


def dsn_problems(desired: Desired) -> list[str]:
    """Why a gateway started from here could not read its store's DSN (a variable not set in this environment, a
    file missing): the local gateways inherit llmctl's environment, so apply refuses before starting them."""
    store = settings(desired).store
    spec = store_spec(settings(desired), desired.config_dir, dsn_from_env=False)
    if store is None or store.rds is not None or spec is None:
        return []
    try:
        read_dsn(spec.dsn_env, spec.dsn_file, dict(os.environ))
    except ValueError as exc:
        return [f"gateway.store: {exc}"]
    return []


def checks(resolved: Resolved, local_targets: set[str]) -> list[Check]:
    """What a reviewer should know before the gateway runs: keys that cannot be read here, hosted models without
    an endpoint or key variable, and budgets that would meter tokens without a price."""
    desired = resolved.desired
    found = [Check(severity="warning", address=f"gateway.{desired.environment}",
                   message=f"{problem}; apply will refuse until it is") for problem in key_problems(desired)]
    priced = prices(resolved)
    for name in routed(desired, local_targets):
        model = desired.models[name]
        source = model.parsed_source
        if source.hosted and source.location.partition("/")[0] not in API_DEFAULTS and not (
                model.api_base and model.api_key_env):
            found.append(Check(severity="error", address=f"model.{name}", message=(
                f"{model.source} has no built-in endpoint: set api_base (an OpenAI-compatible URL) and api_key_env")))
        # a hosted model without a price: the cost estimate says so, as an error where a blocking budget counts it
        if desired.budgets_of(name) and priced.get(name) is None and not source.hosted:
            found.append(Check(severity="warning", address=f"model.{name}", message=(
                f"counts against budget {', '.join(desired.budgets_of(name))} but has no price, so the gateway "
                "meters its tokens without spend: declare `traffic` and a price (gpu_hour_usd on its target)")))
    return found


def prices(resolved: Resolved) -> dict[str, Price | None]:
    """USD per 1M tokens, as the cost estimate priced each model: for hosted models their declared price, else
    genai-prices'; for self-hosted ones the amortised figure (the replicas' hourly cost over the declared output
    tokens), charged on output tokens, which it already covers input for. None where the estimate has none, so
    spend is never a silent $0."""
    from llmctl.cost.catalog import CatalogError

    try:
        report, _ = resolved.cost
    except CatalogError:
        return {}
    prices: dict[str, Price | None] = {}
    for cost in report.models:
        if cost.price is not None:
            prices[cost.model] = Price(usd_per_1m_input=cost.price.input_per_1m,
                                       usd_per_1m_output=cost.price.output_per_1m,
                                       usd_per_1m_cached_input=cost.price.cached_input_per_1m,
                                       basis=f"{cost.price.source}: {cost.detail}")
        elif cost.per_1m_output_tokens_usd:
            prices[cost.model] = Price(usd_per_1m_input=0.0, usd_per_1m_output=cost.per_1m_output_tokens_usd,
                                       basis=f"amortised: {cost.detail} × {cost.replicas_min} over the declared "
                                             "traffic's output tokens")
        else:
            prices[cost.model] = None
    return prices


def _targets(slo: Slo) -> SloTargets:
    def seconds(ms: float | None) -> float | None:
        return None if ms is None else ms / 1000

    return SloTargets(ttft_s=seconds(slo.ttft_p95_ms), latency_s=seconds(slo.latency_p95_ms),
                      itl_s=seconds(slo.itl_p95_ms))


def _declared(thresholds: Iterable[float | None]) -> list[float]:
    return sorted({threshold for threshold in thresholds if threshold is not None})


def _key_spec(key: GatewayKey, config_dir: Path, from_env: bool, budgets: list[str]) -> KeySpec:
    secret = {"env": cluster_key_env(key)} if from_env else {"sha256": hash_key(read_key(key, config_dir))}
    return KeySpec(id=key.name, models=key.models, team=key.team, requests_per_minute=key.requests_per_minute,
                   tokens_per_minute=key.tokens_per_minute, budgets=budgets, **secret)


def read_key(key: GatewayKey, config_dir: Path) -> str:
    if key.env is not None:
        value = os.environ.get(key.env, "").strip()
        if not value:
            raise LlmctlError(f"gateway key '{key.name}': environment variable {key.env} is not set")
        return value
    path = config_dir / (key.file or "")
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise LlmctlError(f"gateway key '{key.name}': cannot read {path}: {exc.strerror}") from None
    if not value:
        raise LlmctlError(f"gateway key '{key.name}': {path} is empty")
    return value
