"""SLO checks: each declared target on the right side of its limit, and goodput's per-request definition."""
from __future__ import annotations

from typing import Any

import pytest

from llmctl.config.schema import Slo
from llmctl.verify.model import LoadSummary, Percentiles, Sample
from llmctl.verify.slo import evaluate, meets_targets


def _spread(p95: float) -> Percentiles:
    # Distinct percentiles, so a check reading p50 or p99 instead of p95 gives a different verdict.
    return Percentiles(p50=p95 / 5, p90=p95 / 2, p95=p95, p99=p95 * 2)


def _summary(**fields: Any) -> LoadSummary:
    values: dict[str, Any] = {
        "requests": 100, "failures": 2, "error_rate": 0.02, "duration_s": 10, "users": 4, "rps": 5.0,
        "output_tokens_per_s": 50, "ttft_ms": _spread(500), "latency_ms": _spread(4000), "itl_ms": _spread(40),
        "goodput": 0.9, "failure_reasons": {"HTTP 500": 2}}
    return LoadSummary(**{**values, **fields})


# target, its measured value in _summary(), the comparison
TARGETS = [("ttft_p95_ms", 500, "<="), ("latency_p95_ms", 4000, "<="), ("itl_p95_ms", 40, "<="),
           ("error_rate", 0.02, "<="), ("min_rps", 5.0, ">="), ("min_goodput", 0.9, ">=")]


def _check(target: str, limit: float, summary: LoadSummary | None = None) -> Any:
    [check] = evaluate(Slo(name="s", **{target: limit}), summary or _summary())
    assert check.target == target and check.limit == limit
    return check


@pytest.mark.parametrize(("target", "measured", "comparison"), TARGETS)
def test_target_passes_at_its_limit_and_on_the_good_side(target: str, measured: float, comparison: str) -> None:
    roomier = measured * 1.2 if comparison == "<=" else measured * 0.8
    for limit in (measured, roomier):
        check = _check(target, limit)
        assert check.passed and check.measured == pytest.approx(measured) and check.comparison == comparison


@pytest.mark.parametrize(("target", "measured", "comparison"), TARGETS)
def test_target_fails_on_the_wrong_side(target: str, measured: float, comparison: str) -> None:
    tighter = measured * 0.9 if comparison == "<=" else measured * 1.05
    check = _check(target, tighter)
    assert not check.passed and check.measured == pytest.approx(measured)


@pytest.mark.parametrize(("target", "summary"), [
    ("ttft_p95_ms", _summary(ttft_ms=None)),     # no request succeeded
    ("latency_p95_ms", _summary(latency_ms=None)),
    ("itl_p95_ms", _summary(itl_ms=None)),
    ("min_goodput", _summary(goodput=None)),
])
def test_target_with_nothing_measured_fails(target: str, summary: LoadSummary) -> None:
    check = _check(target, 1e9 if target != "min_goodput" else 0.0, summary)
    assert check.measured is None and not check.passed


def test_only_declared_targets_are_checked() -> None:
    assert evaluate(Slo(name="s"), _summary()) == []
    checks = evaluate(Slo(name="s", error_rate=0.05, min_rps=1), _summary())
    assert [check.target for check in checks] == ["error_rate", "min_rps"]
    assert all(check.passed for check in checks)


def _sample(ok: bool = True, ttft: float | None = 100, latency: float = 1000,
            itl: list[float] | None = None) -> Sample:
    return Sample(start_s=0, endpoint="http://a/v1", ok=ok, ttft_ms=ttft, latency_ms=latency,
                  itl_ms=[20, 30] if itl is None else itl, error=None if ok else "HTTP 500")


SLO = Slo(name="s", ttft_p95_ms=200, latency_p95_ms=2000, itl_p95_ms=50)


@pytest.mark.parametrize(("sample", "good"), [
    (_sample(), True),
    (_sample(ttft=200, latency=2000, itl=[50, 50]), True),  # exactly at every limit
    (_sample(itl=[]), True),                                # a one-token answer has no gaps to judge
    (_sample(ok=False), False),
    (_sample(ttft=201), False),
    (_sample(ttft=None), False),
    (_sample(latency=2001), False),
    (_sample(itl=[10, 10, 51, 10]), False),                 # any one gap over the limit
])
def test_meets_targets_judges_each_request(sample: Sample, good: bool) -> None:
    assert meets_targets(SLO)(sample) is good


def test_meets_targets_without_per_request_targets_is_success() -> None:
    good = meets_targets(Slo(name="s", error_rate=0.01, min_rps=1))
    assert good(_sample(ttft=99999, latency=99999, itl=[9999]))
    assert not good(_sample(ok=False))
