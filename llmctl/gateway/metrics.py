"""Prometheus metrics of one gateway process, served at /metrics."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from llmctl.gateway.routing import STABLE
from llmctl.gateway.spec import SloThresholds
from llmctl.gateway.spend import BudgetState

# The exposed series names: the rules, dashboards and the monitor view read these, never a copy of the strings.
# (prometheus_client adds `_total` to a counter's name and `_bucket`/`_count`/`_sum` to a histogram's.)
REQUESTS = "llmctl_gateway_requests_total"  # {model, version, key, team, status}
REQUEST_SECONDS = "llmctl_gateway_request_seconds"  # {model, version}
TTFT_SECONDS = "llmctl_gateway_ttft_seconds"  # {model, version}
ITL_SECONDS = "llmctl_gateway_itl_seconds"  # {model, version}: each gap between streamed tokens
PROMPT_REQUESTS = "llmctl_gateway_prompt_requests_total"  # {model, prompt, prompt_version, status}: an A/B test
SLO_REQUESTS = "llmctl_gateway_slo_requests_total"  # {model, version, outcome=good|bad}: met every per-request target or not
TOKENS = "llmctl_gateway_tokens_total"  # {model, version, key, team, direction}
SPEND = "llmctl_gateway_spend_usd_total"  # {model, version, key, team}
GUARDRAIL_ACTIONS = "llmctl_gateway_guardrail_actions_total"  # {model, rule, action}
UPSTREAM_ERRORS = "llmctl_gateway_upstream_errors_total"  # {model, reason}
CACHE = "llmctl_gateway_cache_requests_total"  # {model, cache=hit|miss|bypass}
FEEDBACK = "llmctl_gateway_feedback_total"  # {model, version, prompt_version, rating=positive|negative}
UPSTREAM_UP = "llmctl_gateway_upstream_up"  # {model, replica}: 1 when the replica answered its last health probe
BUDGET_SPENT = "llmctl_budget_spent_usd"  # {budget}: spent in the current period
BUDGET_LIMIT = "llmctl_budget_limit_usd"  # {budget}
BUDGET_PERIOD_END = "llmctl_budget_period_end_timestamp_seconds"  # {budget}
BUDGET_SPEND = "llmctl_budget_spend_usd_total"  # {budget}: counter, for the spend rate
GATEWAY_JOB = "llmctl-gateway"  # the scrape job of the gateway, whose `up` says it is down
ENGINE_JOB = "llmctl-engine"  # the scrape job of engines that export metrics, labelled with `model`

# A whole request runs from a few ms (a refusal, a cached short answer) to minutes (a long generation, up to the
# upstream timeout); the default buckets stop at 10 s and would put every long generation in +Inf.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# Time to first token is prefill plus queueing: tens of ms on a warm server, seconds under load or for long prompts.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
# A gap between tokens is a few ms on a GPU, tens of ms on a CPU; a stall (a batch scheduled ahead, a swap) seconds.
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
               1.0, 2.5, 5.0, 10.0)
NO_TEAM = "none"  # the team label of a key that declares none, and of anonymous or unauthenticated callers


class ReplicaState(NamedTuple):
    model: str
    replica: str  # its index in the route's upstream list: a URL would be a label no rule can be written against
    up: bool


def with_thresholds(buckets: Iterable[float], thresholds: Iterable[float]) -> tuple[float, ...]:
    """The default boundaries plus one at each SLO threshold (an `le` exactly at 0.8 for `ttft_p95_ms: 800`)."""
    return tuple(sorted({*buckets, *thresholds}))


def _family(name: str) -> str:
    """A counter's name as prometheus_client takes it: it adds `_total` itself."""
    return name.removesuffix("_total")


class GatewayMetrics:
    def __init__(self, slo: SloThresholds | None = None, slo_models: Iterable[str] = (),
                 budgets: Iterable[str] = ()) -> None:
        """`slo_models`, `budgets`: their counters are shown at 0 from the start, so that a rule's ratio or rate
        has a series to read before the first bad request or the first spend."""
        slo = slo or SloThresholds()
        # Its own registry, not the process-global one: several gateways (or tests) in one process stay separate.
        self.registry = CollectorRegistry()
        # `key` is a declared key's name (or anonymous, or unauthenticated) and `team` the team it declares: both
        # bounded by the config, never a value a client chooses, so spend and traffic can be attributed without
        # unbounded series.
        self._requests = Counter(_family(REQUESTS), "Requests answered, by key and HTTP status.",
                                 ["model", "version", "key", "team", "status"], registry=self.registry)
        self._prompt_requests = Counter(_family(PROMPT_REQUESTS), "Requests that rendered the model's prompt, by the "
                                        "prompt version served.", ["model", "prompt", "prompt_version", "status"],
                                        registry=self.registry)
        self._request_seconds = Histogram(REQUEST_SECONDS, "Whole request latency.",
                                          ["model", "version"], buckets=with_thresholds(REQUEST_BUCKETS, slo.request_seconds),
                                          registry=self.registry)
        self._ttft_seconds = Histogram(TTFT_SECONDS, "Time to the first streamed token.",
                                       ["model", "version"], buckets=with_thresholds(TTFT_BUCKETS, slo.ttft_seconds),
                                       registry=self.registry)
        self._itl_seconds = Histogram(ITL_SECONDS, "Each gap between consecutive streamed text chunks.",
                                      ["model", "version"], buckets=with_thresholds(ITL_BUCKETS, slo.itl_seconds),
                                      registry=self.registry)
        self._slo_requests = Counter(_family(SLO_REQUESTS), "Requests to a model with an SLO: good when it succeeded "
                                     "within every per-request target, bad when it failed or missed one (client "
                                     "errors are not counted).", ["model", "version", "outcome"], registry=self.registry)
        self._tokens = Counter(_family(TOKENS), "Tokens metered, by key and direction (input|output).",
                               ["model", "version", "key", "team", "direction"], registry=self.registry)
        self._spend = Counter(_family(SPEND), "Priced spend in USD by key (unpriced tokens add nothing).",
                              ["model", "version", "key", "team"], registry=self.registry)
        self._budget_spend = Counter(_family(BUDGET_SPEND), "Priced spend in USD counted against the budget.",
                                     ["budget"], registry=self.registry)
        self._guardrail = Counter(_family(GUARDRAIL_ACTIONS), "Guardrail actions taken, by rule.",
                                  ["model", "rule", "action"], registry=self.registry)
        self._cache = Counter(_family(CACHE), "Requests the response cache answered (hit), stored or could (miss), "
                              "or could not cache (bypass: not deterministic).", ["model", "cache"],
                              registry=self.registry)
        self._feedback = Counter(_family(FEEDBACK), "Ratings of answers (POST /v1/feedback), by the version and "
                                 "prompt version that answered.", ["model", "version", "prompt_version", "rating"],
                                 registry=self.registry)
        self._upstream_errors = Counter(_family(UPSTREAM_ERRORS), "Failed upstream calls, by reason.",
                                        ["model", "reason"], registry=self.registry)
        self.declare(slo_models, budgets)

    def declare(self, slo_models: Iterable[str] = (), budgets: Iterable[str] = ()) -> None:
        """Show these models' goodput and these budgets' spend at 0 until they count something (at start, and for
        what a reloaded spec adds)."""
        for model in slo_models:
            for outcome in ("good", "bad"):
                self._slo_requests.labels(model=model, version=STABLE, outcome=outcome)
        for budget in budgets:
            self._budget_spend.labels(budget=budget)

    def request(self, model: str, key: str, team: str, status: int, seconds: float, version: str = STABLE) -> None:
        self._requests.labels(model=model, version=version, key=key, team=team, status=str(status)).inc()
        self._request_seconds.labels(model=model, version=version).observe(seconds)

    def prompt_request(self, model: str, prompt: str, version: int, status: int) -> None:
        self._prompt_requests.labels(model=model, prompt=prompt, prompt_version=str(version), status=str(status)).inc()

    def ttft(self, model: str, seconds: float, version: str = STABLE) -> None:
        self._ttft_seconds.labels(model=model, version=version).observe(seconds)

    def itl(self, model: str, gaps: Iterable[float], version: str = STABLE) -> None:
        histogram = self._itl_seconds.labels(model=model, version=version)
        for gap in gaps:
            histogram.observe(gap)

    def slo_request(self, model: str, good: bool, version: str = STABLE) -> None:
        self._slo_requests.labels(model=model, version=version, outcome="good" if good else "bad").inc()

    def tokens(self, model: str, key: str, team: str, input: int, output: int, version: str = STABLE) -> None:
        self._tokens.labels(model=model, version=version, key=key, team=team, direction="input").inc(input)
        self._tokens.labels(model=model, version=version, key=key, team=team, direction="output").inc(output)

    def spend(self, model: str, key: str, team: str, usd: float, budgets: Iterable[str] = (),
              version: str = STABLE) -> None:
        self._spend.labels(model=model, version=version, key=key, team=team).inc(usd)
        for budget in budgets:
            self._budget_spend.labels(budget=budget).inc(usd)

    def guardrail(self, model: str, rule: str, action: str) -> None:
        self._guardrail.labels(model=model, rule=rule, action=action).inc()

    def cache(self, model: str, result: str) -> None:
        self._cache.labels(model=model, cache=result).inc()

    def feedback(self, model: str, version: str, prompt_version: int | None, negative: bool) -> None:
        self._feedback.labels(model=model, version=version, prompt_version=str(prompt_version or ""),
                              rating="negative" if negative else "positive").inc()

    def upstream_error(self, model: str, reason: str) -> None:
        self._upstream_errors.labels(model=model, reason=reason).inc()

    def watch(self, replicas: Callable[[], Iterable[ReplicaState]],
              budgets: Callable[[], Iterable[BudgetState]]) -> None:
        """Serve the replicas' probe results and the budgets' periods as read from the gateway at each scrape."""
        self.registry.register(_Current(replicas, budgets))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Current:
    """A prometheus_client collector of series read when scraped rather than counted as requests pass: they must
    be current with no traffic at all (a replica that died overnight, a budget period that ended, spend another
    process recorded)."""

    def __init__(self, replicas: Callable[[], Iterable[ReplicaState]],
                 budgets: Callable[[], Iterable[BudgetState]]) -> None:
        self._replicas = replicas
        self._budgets = budgets

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())  # the names, for the registry's duplicate check, without reading anything

    def collect(self) -> list[GaugeMetricFamily]:
        up, spent, limit, end = families = self._families()
        for replica in self._replicas():
            up.add_metric([replica.model, replica.replica], 1.0 if replica.up else 0.0)
        for budget in self._budgets():
            spent.add_metric([budget.name], budget.spent_usd)
            limit.add_metric([budget.name], budget.limit_usd)
            end.add_metric([budget.name], budget.period_end)
        return list(families)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (GaugeMetricFamily(UPSTREAM_UP, "1 when the replica answered its last health probe (or was too busy "
                                  "to, connected); 0 when it refused the connection, broke it or answered with a 5xx, "
                                  "or refused a request's connection since.", labels=["model", "replica"]),
                GaugeMetricFamily(BUDGET_SPENT, "USD spent against the budget in its current period.",
                                  labels=["budget"]),
                GaugeMetricFamily(BUDGET_LIMIT, "The budget's limit per period, USD.", labels=["budget"]),
                GaugeMetricFamily(BUDGET_PERIOD_END, "Unix time the budget's current period ends.",
                                  labels=["budget"]))
