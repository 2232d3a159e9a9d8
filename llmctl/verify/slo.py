"""Measured load against declared SLO targets."""
from __future__ import annotations

from collections.abc import Callable

from llmctl.config.schema import Slo
from llmctl.verify.model import LoadSummary, Sample, SloCheck

# SLO field -> (comparison, the measured value it is held against)
TARGETS: dict[str, tuple[str, Callable[[LoadSummary], float | None]]] = {
    "ttft_p95_ms": ("<=", lambda s: s.ttft_ms.p95 if s.ttft_ms else None),
    "latency_p95_ms": ("<=", lambda s: s.latency_ms.p95 if s.latency_ms else None),
    "itl_p95_ms": ("<=", lambda s: s.itl_ms.p95 if s.itl_ms else None),
    "error_rate": ("<=", lambda s: s.error_rate),
    "min_rps": (">=", lambda s: s.rps),
    "min_goodput": (">=", lambda s: s.goodput),
}


def evaluate(slo: Slo, summary: LoadSummary) -> list[SloCheck]:
    """One check per declared target; a target with nothing measured (no successful request) fails."""
    checks = []
    for field, (comparison, measure) in TARGETS.items():
        limit = getattr(slo, field)
        if limit is None:
            continue
        measured = measure(summary)
        passed = measured is not None and (measured <= limit if comparison == "<=" else measured >= limit)
        checks.append(SloCheck(target=field, limit=limit, measured=measured, comparison=comparison,  # type: ignore[arg-type]
                               passed=passed))
    return checks


def meets_targets(slo: Slo) -> Callable[[Sample], bool]:
    """Whether one request met every per-request target (the goodput definition)."""
    def good(sample: Sample) -> bool:
        if not sample.ok:
            return False
        if slo.ttft_p95_ms is not None and (sample.ttft_ms is None or sample.ttft_ms > slo.ttft_p95_ms):
            return False
        if slo.latency_p95_ms is not None and sample.latency_ms > slo.latency_p95_ms:
            return False
        return slo.itl_p95_ms is None or not sample.itl_ms or max(sample.itl_ms) <= slo.itl_p95_ms

    return good
