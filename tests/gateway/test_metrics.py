"""Gateway metrics: names, labels and values as a Prometheus scraper parses them from render()."""
from __future__ import annotations

import math

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from llmctl.gateway import metrics as names
from llmctl.gateway.metrics import GatewayMetrics, ReplicaState
from llmctl.gateway.spec import SloThresholds
from llmctl.gateway.spend import BudgetState


def samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered page, keyed by (sample name, labels)."""
    text = metrics.render().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def test_requests_by_model_key_team_and_status() -> None:
    metrics = GatewayMetrics()
    metrics.request("chat", "key-a", "search", 200, 0.3)
    metrics.request("chat", "key-a", "search", 200, 1.2)
    metrics.request("chat", "key-b", "none", 429, 0.002)
    assert value(metrics, "llmctl_gateway_requests_total", model="chat", version="stable", key="key-a", team="search", status="200") == 2
    assert value(metrics, "llmctl_gateway_requests_total", model="chat", version="stable", key="key-b", team="none", status="429") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_count", model="chat", version="stable") == 3
    assert math.isclose(value(metrics, "llmctl_gateway_request_seconds_sum", model="chat", version="stable"), 1.502)
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", version="stable", le="0.005") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", version="stable", le="0.25") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", version="stable", le="0.5") == 2
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", version="stable", le="+Inf") == 3


def test_latency_buckets_reach_from_milliseconds_to_minutes() -> None:
    metrics = GatewayMetrics()
    metrics.request("chat", "key-a", "none", 200, 90.0)  # a long generation: must not land only in +Inf
    metrics.ttft("chat", 0.04)
    bounds = {name: sorted(float(dict(labels)["le"]) for (sample, labels) in samples(metrics)
                           if sample == f"{name}_bucket")
              for name in ("llmctl_gateway_request_seconds", "llmctl_gateway_ttft_seconds")}
    for finite in ([b for b in found if b != math.inf] for found in bounds.values()):
        assert finite[0] <= 0.01 and finite[-1] >= 60
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", version="stable", le="120.0") == 1
    assert value(metrics, "llmctl_gateway_ttft_seconds_bucket", model="chat", version="stable", le="0.05") == 1
    assert value(metrics, "llmctl_gateway_ttft_seconds_bucket", model="chat", version="stable", le="0.025") == 0


def test_tokens_spend_guardrails_and_upstream_errors() -> None:
    metrics = GatewayMetrics()
    metrics.tokens("chat", "key-a", "search", 120, 30)
    metrics.tokens("chat", "key-a", "search", 80, 10)
    metrics.tokens("chat", "key-b", "none", 5, 1)
    metrics.spend("chat", "key-a", "search", 0.25)
    metrics.spend("chat", "key-a", "search", 0.5)
    metrics.spend("chat", "key-b", "none", 0.125)
    metrics.guardrail("chat", "pii.email", "redact")
    metrics.guardrail("chat", "pii.email", "redact")
    metrics.guardrail("chat", "prompt_injection", "block")
    metrics.upstream_error("chat", "timeout")
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", version="stable", key="key-a", team="search",
                 direction="input") == 200
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", version="stable", key="key-a", team="search",
                 direction="output") == 40
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", version="stable", key="key-b", team="none",
                 direction="input") == 5
    assert value(metrics, "llmctl_gateway_spend_usd_total", model="chat", version="stable", key="key-a",
                 team="search") == 0.75
    assert value(metrics, "llmctl_gateway_spend_usd_total", model="chat", version="stable", key="key-b",
                 team="none") == 0.125
    assert value(metrics, "llmctl_gateway_guardrail_actions_total", model="chat", rule="pii.email",
                 action="redact") == 2
    assert value(metrics, "llmctl_gateway_guardrail_actions_total", model="chat", rule="prompt_injection",
                 action="block") == 1
    assert value(metrics, "llmctl_gateway_upstream_errors_total", model="chat", reason="timeout") == 1


def test_each_gateway_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # the global registry would refuse the second
    first.request("chat", "key-a", "none", 200, 0.1)
    labels = {"model": "chat", "version": "stable", "key": "key-a", "team": "none", "status": "200"}
    assert ("llmctl_gateway_requests_total", frozenset(labels.items())) in samples(first)
    assert ("llmctl_gateway_requests_total", frozenset(labels.items())) not in samples(second)
    assert REGISTRY.get_sample_value("llmctl_gateway_requests_total", labels) is None


def test_inter_token_gaps_from_a_millisecond_to_seconds_with_the_slo_threshold() -> None:
    metrics = GatewayMetrics(SloThresholds(itl_seconds=[0.12]))
    metrics.itl("chat", [0.004, 0.12, 0.121, 3.0])
    bounds = sorted(float(dict(labels)["le"]) for (sample, labels) in samples(metrics)
                    if sample == "llmctl_gateway_itl_seconds_bucket")
    assert bounds[0] <= 0.001 and 5.0 <= bounds[-2] and bounds[-1] == math.inf
    assert value(metrics, "llmctl_gateway_itl_seconds_count", model="chat", version="stable") == 4
    assert value(metrics, "llmctl_gateway_itl_seconds_bucket", model="chat", version="stable", le="0.005") == 1
    assert value(metrics, "llmctl_gateway_itl_seconds_bucket", model="chat", version="stable", le="0.12") == 2  # `le`: 0.12 is within
    assert value(metrics, "llmctl_gateway_itl_seconds_bucket", model="chat", version="stable", le="2.5") == 3


def test_what_a_rule_divides_by_or_alerts_on_is_at_zero_from_the_start() -> None:
    metrics = GatewayMetrics(slo_models=["chat"], budgets=["monthly", "daily"])
    found = samples(metrics)
    for outcome in ("good", "bad"):
        assert found[("llmctl_gateway_slo_requests_total", frozenset({"model": "chat", "version": "stable", "outcome": outcome}.items()))] == 0
    assert value(metrics, "llmctl_budget_spend_usd_total", budget="monthly") == 0
    metrics.slo_request("chat", good=True)
    metrics.slo_request("chat", good=False)
    metrics.slo_request("chat", good=True)
    metrics.spend("chat", "key-a", "none", 0.25, budgets=["monthly", "daily"])
    metrics.spend("chat", "key-a", "none", 0.5, budgets=["monthly"])
    assert value(metrics, "llmctl_gateway_slo_requests_total", model="chat", version="stable", outcome="good") == 2
    assert value(metrics, "llmctl_gateway_slo_requests_total", model="chat", version="stable", outcome="bad") == 1
    assert value(metrics, "llmctl_budget_spend_usd_total", budget="monthly") == 0.75
    assert value(metrics, "llmctl_budget_spend_usd_total", budget="daily") == 0.25


def test_replicas_and_budgets_are_read_at_each_scrape() -> None:
    metrics = GatewayMetrics()
    replicas = [ReplicaState("chat", "0", True), ReplicaState("chat", "1", False)]
    budgets = [BudgetState("monthly", limit_usd=100.0, spent_usd=12.5, period_end=1_767_225_600.0)]
    metrics.watch(lambda: replicas, lambda: budgets)
    assert value(metrics, "llmctl_gateway_upstream_up", model="chat", replica="0") == 1
    assert value(metrics, "llmctl_gateway_upstream_up", model="chat", replica="1") == 0
    assert value(metrics, "llmctl_budget_spent_usd", budget="monthly") == 12.5
    assert value(metrics, "llmctl_budget_limit_usd", budget="monthly") == 100
    assert value(metrics, "llmctl_budget_period_end_timestamp_seconds", budget="monthly") == 1_767_225_600
    replicas[1] = ReplicaState("chat", "1", True)
    budgets[0] = BudgetState("monthly", limit_usd=100.0, spent_usd=13.0, period_end=1_767_225_600.0)
    assert value(metrics, "llmctl_gateway_upstream_up", model="chat", replica="1") == 1
    assert value(metrics, "llmctl_budget_spent_usd", budget="monthly") == 13


def test_every_series_is_exposed_under_its_contract_name() -> None:
    """The rules and dashboards are written against the constants of metrics.py: what render() shows must be
    exactly those names (a counter with the `_total` the constant has, a histogram with its `_bucket`s)."""
    metrics = GatewayMetrics(slo_models=["chat"], budgets=["monthly"])
    metrics.watch(lambda: [ReplicaState("chat", "0", True)],
                  lambda: [BudgetState("monthly", limit_usd=1.0, spent_usd=0.0, period_end=0.0)])
    metrics.request("chat", "key-a", "none", 200, 0.1)
    metrics.ttft("chat", 0.1)
    metrics.itl("chat", [0.01])
    metrics.tokens("chat", "key-a", "none", 1, 1)
    metrics.spend("chat", "key-a", "none", 0.1, budgets=["monthly"])
    metrics.guardrail("chat", "pii.email", "redact")
    metrics.upstream_error("chat", "timeout")
    shown = {sample for sample, _ in samples(metrics)}
    counters = [names.REQUESTS, names.SLO_REQUESTS, names.TOKENS, names.SPEND, names.GUARDRAIL_ACTIONS,
                names.UPSTREAM_ERRORS, names.BUDGET_SPEND]
    histograms = [names.REQUEST_SECONDS, names.TTFT_SECONDS, names.ITL_SECONDS]
    gauges = [names.UPSTREAM_UP, names.BUDGET_SPENT, names.BUDGET_LIMIT, names.BUDGET_PERIOD_END]
    assert all(name.endswith("_total") for name in counters)
    assert set(counters) | set(gauges) | {f"{name}_bucket" for name in histograms} <= shown
