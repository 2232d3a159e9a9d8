"""Percentiles and rates from raw samples (Locust's own percentiles are bucketed, so they are not used)."""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

from llmctl.verify.model import LoadSummary, Percentiles, Sample


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on unsorted input."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def percentiles(values: Sequence[float]) -> Percentiles | None:
    if not values:
        return None
    return Percentiles(**{f"p{q}": round(percentile(values, q), 3) for q in (50, 90, 95, 99)})


def summarise(samples: list[Sample], elapsed_s: float, users: int,
              meets_targets: Callable[[Sample], bool] | None = None) -> LoadSummary:
    ok = [s for s in samples if s.ok]
    failures = len(samples) - len(ok)
    seconds = max(elapsed_s, 1e-9)
    return LoadSummary(
        requests=len(samples),
        failures=failures,
        error_rate=round(failures / len(samples), 4) if samples else 1.0,
        duration_s=round(elapsed_s, 3),
        users=users,
        rps=round(len(ok) / seconds, 3),
        output_tokens_per_s=round(sum(s.output_tokens for s in ok) / seconds, 2),
        ttft_ms=percentiles([s.ttft_ms for s in ok if s.ttft_ms is not None]),
        latency_ms=percentiles([s.latency_ms for s in ok]),
        itl_ms=percentiles([gap for s in ok for gap in s.itl_ms]),
        goodput=round(sum(1 for s in samples if meets_targets(s)) / len(samples), 4)
        if meets_targets and samples else None,
        failure_reasons=dict(Counter(s.error or "unknown" for s in samples if not s.ok).most_common()),
    )
