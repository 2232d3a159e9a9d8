"""The gateway's spec as apply builds it from the config: what it carries for the metrics that watch the SLOs."""
from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from llmctl.config.load import load
from llmctl.desired import Desired
from llmctl.gateway.build import Upstream, build_spec
from llmctl.gateway.metrics import GatewayMetrics
from support import QUICKSTART, context, edit


def _spec_of(config: Path):  # type: ignore[no-untyped-def]
    upstream = Upstream(urls=["http://127.0.0.1:9/v1"], served_name="assistant")
    return build_spec(context(Desired.from_config(load(config))), {"assistant": upstream}, config.parent,
                      keys_from_env=True)


def _boundaries(metrics: GatewayMetrics, name: str) -> set[str]:
    """The `le` values of a histogram (a labelled one shows its buckets once it has observed something)."""
    metrics.ttft("assistant", 0.1)
    metrics.request("assistant", "anonymous", 200, 0.1)
    return {sample.labels["le"] for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples if sample.name == f"{name}_bucket"}


def test_every_slo_threshold_is_a_bucket_boundary(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(QUICKSTART.read_text())
    edit(config, "ttft_p95_ms: 3000", "ttft_p95_ms: 800")
    edit(config, "latency_p95_ms: 15000", "latency_p95_ms: 4321")
    spec = _spec_of(config)
    assert (spec.slo_thresholds.ttft_seconds, spec.slo_thresholds.request_seconds) == ([0.8], [4.321])

    assert {"0.8", "1.0"} <= _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_ttft_seconds")
    assert "4.321" in _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_request_seconds")
    metrics = GatewayMetrics(spec.slo_thresholds)
    metrics.ttft("assistant", 0.8)  # exactly at the threshold: within it (Prometheus buckets are `le`)
    metrics.ttft("assistant", 0.81)
    counts = {sample.labels["le"]: sample.value
              for family in text_string_to_metric_families(metrics.render().decode())
              for sample in family.samples if sample.name == "llmctl_gateway_ttft_seconds_bucket"}
    assert (counts["0.8"], counts["1.0"]) == (1, 2)  # the share over 800 ms is exact: 1 of 2


def test_without_slos_the_default_boundaries_stay(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(QUICKSTART.read_text())
    edit(config, "    slo: interactive\n", "")
    spec = _spec_of(config)
    assert spec.slo_thresholds.ttft_seconds == [] and spec.slo_thresholds.request_seconds == []
    default = _boundaries(GatewayMetrics(), "llmctl_gateway_ttft_seconds")
    assert "0.75" in default and "3.0" in default
    assert _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_ttft_seconds") == default
