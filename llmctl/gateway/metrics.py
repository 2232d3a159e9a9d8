"""Prometheus metrics of one gateway process, served at /metrics."""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmctl.gateway.spec import SloThresholds

# The exposed series names: the rules, dashboards and the monitor view read these, never a copy of the strings.
# (prometheus_client adds `_total` to a counter's name and `_bucket`/`_count`/`_sum` to a histogram's.)
REQUESTS = "llmctl_gateway_requests_total"  # {model, key, team, status}
REQUEST_SECONDS = "llmctl_gateway_request_seconds"  # {model}
TTFT_SECONDS = "llmctl_gateway_ttft_seconds"  # {model}
ITL_SECONDS = "llmctl_gateway_itl_seconds"  # {model}: each gap between streamed tokens
SLO_REQUESTS = "llmctl_gateway_slo_requests_total"  # {model, outcome=good|bad}: met every per-request target or not
TOKENS = "llmctl_gateway_tokens_total"  # {model, key, team, direction}
SPEND = "llmctl_gateway_spend_usd_total"  # {model, key, team}
GUARDRAIL_ACTIONS = "llmctl_gateway_guardrail_actions_total"  # {model, rule, action}
UPSTREAM_ERRORS = "llmctl_gateway_upstream_errors_total"  # {model, reason}
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


def with_thresholds(buckets: Iterable[float], thresholds: Iterable[float]) -> tuple[float, ...]:
    """The default boundaries plus one at each SLO threshold (an `le` exactly at 0.8 for `ttft_p95_ms: 800`)."""
    return tuple(sorted({*buckets, *thresholds}))


class GatewayMetrics:
    def __init__(self, slo: SloThresholds | None = None) -> None:
        slo = slo or SloThresholds()
        # Its own registry, not the process-global one: several gateways (or tests) in one process stay separate.
        self.registry = CollectorRegistry()
        # `key` is a declared key's name (or anonymous, or unauthenticated): bounded by the config, never a value a
        # client chooses, so spend and traffic can be attributed without unbounded series.
        self._requests = Counter("llmctl_gateway_requests", "Requests answered, by key and HTTP status.",
                                 ["model", "key", "status"], registry=self.registry)
        self._request_seconds = Histogram("llmctl_gateway_request_seconds", "Whole request latency.",
                                          ["model"], buckets=with_thresholds(REQUEST_BUCKETS, slo.request_seconds),
                                          registry=self.registry)
        self._ttft_seconds = Histogram("llmctl_gateway_ttft_seconds", "Time to the first streamed token.",
                                       ["model"], buckets=with_thresholds(TTFT_BUCKETS, slo.ttft_seconds),
                                       registry=self.registry)
        self._tokens = Counter("llmctl_gateway_tokens", "Tokens metered, by key and direction (input|output).",
                               ["model", "key", "direction"], registry=self.registry)
        self._spend = Counter("llmctl_gateway_spend_usd", "Priced spend in USD by key (unpriced tokens add nothing).",
                              ["model", "key"], registry=self.registry)
        self._guardrail = Counter("llmctl_gateway_guardrail_actions", "Guardrail actions taken, by rule.",
                                  ["model", "rule", "action"], registry=self.registry)
        self._upstream_errors = Counter("llmctl_gateway_upstream_errors", "Failed upstream calls, by reason.",
                                        ["model", "reason"], registry=self.registry)

    def request(self, model: str, key: str, status: int, seconds: float) -> None:
        self._requests.labels(model=model, key=key, status=str(status)).inc()
        self._request_seconds.labels(model=model).observe(seconds)

    def ttft(self, model: str, seconds: float) -> None:
        self._ttft_seconds.labels(model=model).observe(seconds)

    def tokens(self, model: str, key: str, input: int, output: int) -> None:
        self._tokens.labels(model=model, key=key, direction="input").inc(input)
        self._tokens.labels(model=model, key=key, direction="output").inc(output)

    def spend(self, model: str, key: str, usd: float) -> None:
        self._spend.labels(model=model, key=key).inc(usd)

    def guardrail(self, model: str, rule: str, action: str) -> None:
        self._guardrail.labels(model=model, rule=rule, action=action).inc()

    def upstream_error(self, model: str, reason: str) -> None:
        self._upstream_errors.labels(model=model, reason=reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
