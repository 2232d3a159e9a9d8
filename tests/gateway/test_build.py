"""The gateway's spec as apply builds it from the config: what it carries for the metrics that watch the SLOs and
attribute spend, and the prices it meters with."""
from __future__ import annotations

from itertools import product
from pathlib import Path

import genai_prices
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.upstream import RecordingUpstream, eventually, running_gateway
from llmctl.config.load import load
from llmctl.config.schema import Slo
from llmctl.desired import Desired
from llmctl.gateway.build import Upstream, build_spec
from llmctl.gateway.metering import Ledger
from llmctl.gateway.metrics import GatewayMetrics
from llmctl.gateway.spec import SloTargets
from llmctl.verify.model import Sample
from llmctl.verify.slo import meets_targets
from support import QUICKSTART, context, edit


def _spec_of(config: Path):  # type: ignore[no-untyped-def]
    upstream = Upstream(urls=["http://127.0.0.1:9/v1"], served_name="assistant")
    return build_spec(context(Desired.from_config(load(config))), {"assistant": upstream}, config.parent,
                      keys_from_env=True)


def _boundaries(metrics: GatewayMetrics, name: str) -> set[str]:
    """The `le` values of a histogram (a labelled one shows its buckets once it has observed something)."""
    metrics.ttft("assistant", 0.1)
    metrics.itl("assistant", [0.1])
    metrics.request("assistant", "anonymous", "none", 200, 0.1)
    return {sample.labels["le"] for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples if sample.name == f"{name}_bucket"}


def test_every_slo_threshold_is_a_bucket_boundary(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(QUICKSTART.read_text())
    edit(config, "ttft_p95_ms: 3000", "ttft_p95_ms: 800")
    edit(config, "latency_p95_ms: 15000", "latency_p95_ms: 4321\n    itl_p95_ms: 123")
    spec = _spec_of(config)
    thresholds = spec.slo_thresholds
    assert (thresholds.ttft_seconds, thresholds.request_seconds, thresholds.itl_seconds) == ([0.8], [4.321], [0.123])

    assert {"0.8", "1.0"} <= _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_ttft_seconds")
    assert "4.321" in _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_request_seconds")
    assert "0.123" in _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_itl_seconds")
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
    assert spec.routes["assistant"].slo is None  # so its requests are not counted as good or bad
    default = _boundaries(GatewayMetrics(), "llmctl_gateway_ttft_seconds")
    assert "0.75" in default and "3.0" in default
    assert _boundaries(GatewayMetrics(spec.slo_thresholds), "llmctl_gateway_ttft_seconds") == default


def test_a_model_carries_its_slos_per_request_targets(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(QUICKSTART.read_text())
    edit(config, "ttft_p95_ms: 3000", "ttft_p95_ms: 800\n    itl_p95_ms: 150")
    assert _spec_of(config).routes["assistant"].slo == SloTargets(ttft_s=0.8, latency_s=15.0, itl_s=0.15)
    edit(config, "    ttft_p95_ms: 800\n    itl_p95_ms: 150\n    latency_p95_ms: 15000\n", "")
    # An SLO with no per-request target (an error rate only): a request is good when it succeeded.
    assert _spec_of(config).routes["assistant"].slo == SloTargets()


def test_good_requests_are_those_the_load_test_counts_as_good() -> None:
    """SloTargets.met is verify's meets_targets, applied to what the gateway measured (in seconds, as built)."""
    for ttft_target, latency_target, itl_target in [(800, 4000, 150), (None, 4000, None), (800, None, 150),
                                                    (None, None, None)]:
        slo = Slo(name="s", ttft_p95_ms=ttft_target, latency_p95_ms=latency_target, itl_p95_ms=itl_target)
        targets = SloTargets(ttft_s=_seconds(ttft_target), latency_s=_seconds(latency_target),
                             itl_s=_seconds(itl_target))
        for ttft, latency, itl in product((None, 500, 800, 801), (3000, 4000, 4001),
                                          ([], [100], [100, 150], [150, 151])):
            sample = Sample(start_s=0, endpoint="chat", ok=True, ttft_ms=ttft, latency_ms=latency, itl_ms=itl)
            met = targets.met(_seconds(ttft), latency / 1000, [gap / 1000 for gap in itl])
            assert met == meets_targets(slo)(sample), (slo, sample)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def test_a_key_carries_its_team(tmp_path: Path) -> None:
    config = tmp_path / "llmops.yaml"
    config.write_text(QUICKSTART.read_text())
    assert [key.team for key in _spec_of(config).keys] == [None]  # labelled team="none"
    edit(config, "      requests_per_minute: 120", "      team: support\n      requests_per_minute: 120")
    assert [(key.id, key.team) for key in _spec_of(config).keys] == [("quickstart", "support")]


# --- prices ---------------------------------------------------------------------------------------------------------

HOSTED = """\
version: 1
project: hosted
models:
  - name: partner
    source: api://partner/chat-large
    api_base: {url}
    api_key_env: PARTNER_API_KEY
    price: {{input_per_1m: 1000000, output_per_1m: 2000000}}
    budget: team
  - name: fast
    source: api://groq/llama-3.1-8b-instant
    api_base: {url}
    api_key_env: PARTNER_API_KEY
budgets:
  - {{name: team, limit_usd: 1000, on_exceed: block}}
"""


def test_the_gateway_meters_a_hosted_model_at_its_declared_price(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_API_KEY", "sk-partner")
    config = tmp_path / "llmops.yaml"
    with RecordingUpstream() as upstream:  # answers with 11 input and 7 output tokens of usage
        config.write_text(HOSTED.format(url=upstream.base_url))
        spec = build_spec(context(Desired.from_config(load(config))), {}, tmp_path)
        partner, fast = spec.routes["partner"].price, spec.routes["fast"].price
        assert partner is not None and (partner.usd_per_1m_input, partner.usd_per_1m_output) == (1e6, 2e6)
        assert partner.basis == "declared: api://partner/chat-large"
        # a model without a declared price is priced from genai-prices, and its basis says so
        assert fast is not None and (fast.usd_per_1m_input, fast.usd_per_1m_output) == (0.05, 0.08)
        assert fast.basis.startswith(f"genai-prices {genai_prices.__version__} (groq/llama-3.1-8b-instant)")
        with running_gateway(spec) as url:
            answer = httpx.post(f"{url}/chat/completions", json={
                "model": "partner", "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
            ledger = Ledger(Path(spec.db_path))
            # $1 per input token and $2 per output token, as declared: 11 × 1 + 7 × 2
            assert eventually(lambda: ledger.spent("team", "month") == 25.0)
            ledger.close()
    assert upstream.headers[-1]["authorization"] == "Bearer sk-partner"


def test_input_tokens_the_provider_served_from_its_cache_are_metered_at_the_cached_rate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTNER_API_KEY", "sk-partner")
    config = tmp_path / "llmops.yaml"
    with RecordingUpstream(cached_tokens=5) as upstream:  # 11 input tokens, 5 of them cached; 7 output
        config.write_text(HOSTED.format(url=upstream.base_url).replace(
            "price: {input_per_1m: 1000000, output_per_1m: 2000000}",
            "price: {input_per_1m: 1000000, output_per_1m: 2000000, cached_input_per_1m: 500000}"))
        spec = build_spec(context(Desired.from_config(load(config))), {}, tmp_path)
        with running_gateway(spec) as url:
            answer = httpx.post(f"{url}/chat/completions", json={
                "model": "partner", "messages": [{"role": "user", "content": "Hi"}]})
            assert answer.status_code == 200, answer.text
            ledger = Ledger(Path(spec.db_path))
            # 6 uncached × $1 + 5 cached × $0.50 + 7 output × $2
            assert eventually(lambda: ledger.spent("team", "month") == 22.5)
            ledger.close()
