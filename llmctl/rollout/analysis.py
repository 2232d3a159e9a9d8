"""A step's analysis: both versions' figures over the same window, read from the gateway's own counters (the
`version` label), and the new version's figures held to the SLO's targets and to stable's with the allowed increase.

Argo Rollouts' and Flagger's most common failure is deciding on no data; here a version short of `min_requests`
(or of a figure an SLO target needs) is `short`, and the engine sends it load before anything is decided.
"""
from __future__ import annotations

from collections.abc import Iterable

from llmctl.config.schema import RolloutAnalysis, Slo
from llmctl.gateway import metrics
from llmctl.monitor.live import QUANTILE, Sample, Scrape, bucket_quantile, increase
from llmctl.rollout.model import Comparison, VersionFigures

# With no SLO error_rate, the new version may fail at most this much more often than stable (or than nothing, when
# stable has no traffic in the window): one failure in a hundred, not one in a few, is noise.
ERROR_RATE_SLACK = 0.01


def figures(earlier: Scrape, later: Scrape, model: str, version: str, driven: int = 0) -> VersionFigures:
    """What the gateway counted for `model`'s `version` between two scrapes."""
    grown = [s for s in increase(earlier, later)
             if s.labels.get("model") == model and s.labels.get("version") == version]
    requests = _sum(s for s in grown if s.name == metrics.REQUESTS)
    errors = _sum(s for s in grown if s.name == metrics.REQUESTS and s.labels.get("status", "").startswith("5"))
    # A 4xx is the client's doing (its key, its limits, its input): it says nothing of the version.
    refused = _sum(s for s in grown if s.name == metrics.REQUESTS and s.labels.get("status", "").startswith("4"))
    counted = requests - refused
    good = _sum(s for s in grown if s.name == metrics.SLO_REQUESTS and s.labels.get("outcome") == "good")
    judged = _sum(s for s in grown if s.name == metrics.SLO_REQUESTS)
    # A spend series that did not grow in the window priced none of its requests: no figure, not $0.
    spend = _sum(s for s in grown if s.name == metrics.SPEND)
    ratings = _sum(s for s in grown if s.name == metrics.FEEDBACK)
    negative = _sum(s for s in grown if s.name == metrics.FEEDBACK and s.labels.get("rating") == "negative")
    return VersionFigures(
        requests=round(requests), errors=round(errors), refused=round(refused), driven=driven,
        error_rate=errors / counted if counted else None,
        latency_p95_ms=_p95_ms(grown, metrics.REQUEST_SECONDS), ttft_p95_ms=_p95_ms(grown, metrics.TTFT_SECONDS),
        itl_p95_ms=_p95_ms(grown, metrics.ITL_SECONDS), goodput=good / judged if judged else None,
        cost_per_request_usd=spend / counted if spend > 0 and counted else None,
        ratings=round(ratings) or None, negative_feedback_share=negative / ratings if ratings else None)


def short(found: VersionFigures, slo: Slo | None, analysis: RolloutAnalysis) -> int:
    """How many more requests `found` needs before it can be judged: up to min_requests of those it answered
    for itself (not a 4xx), or min_requests more when a figure an SLO target needs is missing (no streamed request
    yet for a TTFT target)."""
    lacking = max(analysis.min_requests - (found.requests - found.refused), 0)
    if lacking == 0 and slo is not None and any(
            target is not None and figure is None for target, figure in _targets(slo, found)):
        lacking = analysis.min_requests
    return lacking


def compare(canary: VersionFigures, stable: VersionFigures | None, slo: Slo | None,
            analysis: RolloutAnalysis) -> list[Comparison]:
    """The new version's figures against their limits. Stable's figures are shown beside them; they set a limit
    only where the config compares versions (error rate without an SLO target, cost per request)."""
    found: list[Comparison] = []
    stable_rate = stable.error_rate if stable else None
    if slo is not None and slo.error_rate is not None:
        limit, note = slo.error_rate, f"SLO {slo.name}"
    else:
        limit = (stable_rate or 0.0) + ERROR_RATE_SLACK
        note = (f"stable's rate + {ERROR_RATE_SLACK:g}" if stable_rate is not None
                else f"no stable traffic in the window: {ERROR_RATE_SLACK:g}")
    found.append(_held("error_rate", canary.error_rate, stable_rate, limit, note))
    if slo is not None:
        names = ("ttft_p95_ms", "latency_p95_ms", "itl_p95_ms")
        for name, (target, figure) in zip(names, _targets(slo, canary)):
            if target is not None:
                found.append(_held(name, figure, getattr(stable, name) if stable else None, target,
                                   f"SLO {slo.name}"))
        if slo.min_goodput is not None:
            found.append(_held("goodput", canary.goodput, stable.goodput if stable else None, slo.min_goodput,
                               f"SLO {slo.name}", at_least=True))
    if analysis.max_cost_increase is not None:
        found.append(_cost(canary, stable, analysis.max_cost_increase))
    if analysis.max_negative_feedback_increase is not None:
        found.append(_feedback(canary, stable, analysis.max_negative_feedback_increase))
    return found


def _feedback(canary: VersionFigures, stable: VersionFigures | None, increase_allowed: float) -> Comparison:
    """Ratings come from users, so llmctl cannot send a version more of them: with none on either side the share
    is shown as not compared, rather than the step waiting on users who may never rate."""
    new, old = canary.negative_feedback_share, stable.negative_feedback_share if stable else None
    if new is None or old is None:
        return Comparison(name="negative_feedback_share", canary=new, stable=old, passed=True, note=(
            f"not compared: no ratings of the {'new' if new is None else 'stable'} version in the window"))
    limit = old + increase_allowed
    return Comparison(name="negative_feedback_share", canary=new, stable=old, limit=limit, passed=new <= limit,
                      note=f"stable's + {increase_allowed:g} ({canary.ratings} and {stable.ratings if stable else 0} "
                           "ratings)")


def _cost(canary: VersionFigures, stable: VersionFigures | None, increase_allowed: float) -> Comparison:
    new, old = canary.cost_per_request_usd, stable.cost_per_request_usd if stable else None
    if new is None:
        return Comparison(name="cost_per_request_usd", canary=None, stable=old, passed=True,
                          note="not compared: the new version's requests are not priced")
    if old is None:
        return Comparison(name="cost_per_request_usd", canary=new, passed=True,
                          note="not compared: no priced stable request in the window")
    limit = old * (1 + increase_allowed)
    return Comparison(name="cost_per_request_usd", canary=new, stable=old, limit=limit, passed=new <= limit,
                      note=f"stable's + {increase_allowed:.0%}")


def _held(name: str, figure: float | None, stable: float | None, limit: float, note: str,
          at_least: bool = False) -> Comparison:
    # No figure at all after the engine drove load means the version answered nothing that could be measured.
    passed = figure is not None and (figure >= limit if at_least else figure <= limit)
    return Comparison(name=name, canary=figure, stable=stable, limit=limit, comparison=">=" if at_least else "<=",
                      passed=passed, note=note if figure is not None else f"{note}; not measured")


def _targets(slo: Slo, found: VersionFigures) -> list[tuple[float | None, float | None]]:
    return [(slo.ttft_p95_ms, found.ttft_p95_ms), (slo.latency_p95_ms, found.latency_p95_ms),
            (slo.itl_p95_ms, found.itl_p95_ms)]


def _p95_ms(samples: list[Sample], histogram: str) -> float | None:
    buckets: dict[float, float] = {}
    for sample in samples:
        if sample.name == f"{histogram}_bucket":
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
    seconds = bucket_quantile(QUANTILE, buckets.items())
    return None if seconds is None else seconds * 1000


def _sum(samples: Iterable[Sample]) -> float:
    return sum(sample.value for sample in samples)

