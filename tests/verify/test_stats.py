"""Percentiles from raw samples and the load summary a report shows."""
from __future__ import annotations

import pytest

from llmctl.verify.model import Sample
from llmctl.verify.stats import percentile, summarise


@pytest.mark.parametrize(("values", "q", "expected"), [
    # rank = (n - 1) * q / 100, then linear interpolation between the two closest ranks
    ([15, 20, 35, 40, 50], 40, 29.0),     # rank 1.6: 20 + 0.6 * (35 - 20)
    ([15, 20, 35, 40, 50], 50, 35.0),     # rank 2: exactly the middle value
    ([15, 20, 35, 40, 50], 0, 15.0),
    ([15, 20, 35, 40, 50], 100, 50.0),
    ([1, 2, 3, 4], 50, 2.5),              # rank 1.5
    ([1, 2, 3, 4], 95, 3.85),             # rank 2.85: 3 + 0.85 * 1
    ([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 99, 99.1),  # rank 8.91: 90 + 0.91 * 10
    ([7.5], 95, 7.5),
])
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_sorts_its_input() -> None:
    assert percentile([50, 15, 40, 20, 35], 40) == pytest.approx(29.0)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def _ok(ttft: float, latency: float, itl: list[float], tokens: int) -> Sample:
    return Sample(start_s=0, endpoint="http://a/v1", ok=True, ttft_ms=ttft, latency_ms=latency, itl_ms=itl,
                  output_tokens=tokens, tokens_from_usage=True)


def _failed(error: str | None, tokens: int = 0) -> Sample:
    return Sample(start_s=0, endpoint="http://a/v1", ok=False, latency_ms=5, error=error, output_tokens=tokens)


SAMPLES = [
    _ok(100, 1000, [10, 20], 5),
    _failed("no connection: refused"),
    _ok(200, 2000, [30], 7),
    _failed("HTTP 500: boom", tokens=4),  # partial output of a failed request does not count as throughput
    _ok(300, 3000, [], 9),
    _failed("HTTP 500: boom"),
    _failed(None),
]


def test_summary_counts_rates_and_percentiles() -> None:
    summary = summarise(SAMPLES, elapsed_s=2.0, users=3)
    assert (summary.requests, summary.failures, summary.users, summary.duration_s) == (7, 4, 3, 2.0)
    assert summary.error_rate == pytest.approx(4 / 7, abs=1e-4)
    assert summary.rps == 1.5                     # 3 completed requests over 2 s
    assert summary.output_tokens_per_s == 10.5    # (5 + 7 + 9) tokens over 2 s
    assert summary.ttft_ms is not None and summary.latency_ms is not None and summary.itl_ms is not None
    assert (summary.ttft_ms.p50, summary.ttft_ms.p90) == (200, 280)   # of successful requests only
    assert summary.latency_ms.p95 == 2900                             # rank 1.9 of [1000, 2000, 3000]
    assert summary.itl_ms.p50 == 20                                   # every gap of every request: [10, 20, 30]
    assert summary.goodput is None                                    # no per-request targets given


def test_failure_reasons_most_common_first() -> None:
    reasons = summarise(SAMPLES, elapsed_s=2.0, users=3).failure_reasons
    assert reasons == {"HTTP 500: boom": 2, "no connection: refused": 1, "unknown": 1}
    assert next(iter(reasons)) == "HTTP 500: boom"


def test_goodput_is_the_share_of_all_requests_meeting_the_predicate() -> None:
    summary = summarise(SAMPLES, elapsed_s=2.0, users=3, meets_targets=lambda s: s.ok and s.ttft_ms <= 200)
    assert summary.goodput == pytest.approx(2 / 7, abs=1e-4)  # failed requests count against it


def test_nothing_succeeded() -> None:
    summary = summarise([_failed("HTTP 500: boom"), _failed("HTTP 500: boom")], elapsed_s=1.0, users=1,
                        meets_targets=lambda s: s.ok)
    assert (summary.ttft_ms, summary.latency_ms, summary.itl_ms) == (None, None, None)
    assert (summary.error_rate, summary.rps, summary.output_tokens_per_s, summary.goodput) == (1.0, 0, 0, 0)


def test_no_requests_at_all_is_a_total_failure() -> None:
    summary = summarise([], elapsed_s=1.0, users=1, meets_targets=lambda s: s.ok)
    assert (summary.requests, summary.error_rate, summary.rps, summary.goodput) == (0, 1.0, 0, None)
    assert summary.failure_reasons == {}
