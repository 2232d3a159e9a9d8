"""Gateway metrics: names, labels and values as a Prometheus scraper parses them from render()."""
from __future__ import annotations

import math

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from llmctl.gateway.metrics import GatewayMetrics


def samples(metrics: GatewayMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the rendered page, keyed by (sample name, labels)."""
    text = metrics.render().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, frozenset(labels.items()))]


def test_requests_by_model_and_status() -> None:
    metrics = GatewayMetrics()
    metrics.request("chat", "team-a", 200, 0.3)
    metrics.request("chat", "team-a", 200, 1.2)
    metrics.request("chat", "team-b", 429, 0.002)
    assert value(metrics, "llmctl_gateway_requests_total", model="chat", key="team-a", status="200") == 2
    assert value(metrics, "llmctl_gateway_requests_total", model="chat", key="team-b", status="429") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_count", model="chat") == 3
    assert math.isclose(value(metrics, "llmctl_gateway_request_seconds_sum", model="chat"), 1.502)
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", le="0.005") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", le="0.25") == 1
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", le="0.5") == 2
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", le="+Inf") == 3


def test_latency_buckets_reach_from_milliseconds_to_minutes() -> None:
    metrics = GatewayMetrics()
    metrics.request("chat", "team-a", 200, 90.0)  # a long generation: must not land only in +Inf
    metrics.ttft("chat", 0.04)
    bounds = {name: sorted(float(dict(labels)["le"]) for (sample, labels) in samples(metrics)
                           if sample == f"{name}_bucket")
              for name in ("llmctl_gateway_request_seconds", "llmctl_gateway_ttft_seconds")}
    for finite in ([b for b in found if b != math.inf] for found in bounds.values()):
        assert finite[0] <= 0.01 and finite[-1] >= 60
    assert value(metrics, "llmctl_gateway_request_seconds_bucket", model="chat", le="120.0") == 1
    assert value(metrics, "llmctl_gateway_ttft_seconds_bucket", model="chat", le="0.05") == 1
    assert value(metrics, "llmctl_gateway_ttft_seconds_bucket", model="chat", le="0.025") == 0


def test_tokens_spend_guardrails_and_upstream_errors() -> None:
    metrics = GatewayMetrics()
    metrics.tokens("chat", "team-a", 120, 30)
    metrics.tokens("chat", "team-a", 80, 10)
    metrics.tokens("chat", "team-b", 5, 1)
    metrics.spend("chat", "team-a", 0.25)
    metrics.spend("chat", "team-a", 0.5)
    metrics.spend("chat", "team-b", 0.125)
    metrics.guardrail("chat", "pii.email", "redact")
    metrics.guardrail("chat", "pii.email", "redact")
    metrics.guardrail("chat", "prompt_injection", "block")
    metrics.upstream_error("chat", "timeout")
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", key="team-a", direction="input") == 200
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", key="team-a", direction="output") == 40
    assert value(metrics, "llmctl_gateway_tokens_total", model="chat", key="team-b", direction="input") == 5
    assert value(metrics, "llmctl_gateway_spend_usd_total", model="chat", key="team-a") == 0.75
    assert value(metrics, "llmctl_gateway_spend_usd_total", model="chat", key="team-b") == 0.125
    assert value(metrics, "llmctl_gateway_guardrail_actions_total", model="chat", rule="pii.email",
                 action="redact") == 2
    assert value(metrics, "llmctl_gateway_guardrail_actions_total", model="chat", rule="prompt_injection",
                 action="block") == 1
    assert value(metrics, "llmctl_gateway_upstream_errors_total", model="chat", reason="timeout") == 1


def test_each_gateway_has_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()  # the global registry would refuse the second
    first.request("chat", "team-a", 200, 0.1)
    labels = {"model": "chat", "key": "team-a", "status": "200"}
    assert ("llmctl_gateway_requests_total", frozenset(labels.items())) in samples(first)
    assert ("llmctl_gateway_requests_total", frozenset(labels.items())) not in samples(second)
    assert REGISTRY.get_sample_value("llmctl_gateway_requests_total", labels) is None
