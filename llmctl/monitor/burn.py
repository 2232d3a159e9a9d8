"""Error budgets and burn rates: what each SLO target promises over its window, and the multi-window,
multi-burn-rate alerts of the Google SRE workbook (chapter 5, "Alerting on SLOs") that watch it.

A burn rate of 1 spends exactly the budget over the window. An alert that fires after `budget_share` of the budget
is spent within `long_s` burns at `budget_share * window / long_s`; the short window makes it reset quickly once
the burning stops.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmctl.config.schema import Slo

Severity = Literal["page", "ticket"]
Sli = Literal["errors", "ttft", "latency", "itl", "goodput"]


@dataclass(frozen=True)
class BurnWindow:
    severity: Severity
    budget_share: float  # of the whole window's error budget, spent within `long_s`
    long_s: float
    short_s: float

    def factor(self, window_s: float) -> float:
        return self.budget_share * window_s / self.long_s


WINDOWS = (
    BurnWindow("page", 0.02, 3600, 300),
    BurnWindow("page", 0.05, 6 * 3600, 1800),
    BurnWindow("ticket", 0.10, 86400, 2 * 3600),
    BurnWindow("ticket", 0.10, 3 * 86400, 6 * 3600),
)


@dataclass(frozen=True)
class Objective:
    """One target of an SLO as an error budget: the share of events allowed to be bad."""

    sli: Sli
    field: str  # the Slo field it comes from, for messages
    budget: float
    threshold_s: float | None = None  # per-event latency threshold, for the histogram SLIs


def objectives(slo: Slo) -> list[Objective]:
    found = []
    # A p95 target allows 5% of events over the threshold.
    for sli, field in (("ttft", "ttft_p95_ms"), ("latency", "latency_p95_ms"), ("itl", "itl_p95_ms")):
        threshold = getattr(slo, field)
        if threshold is not None:
            found.append(Objective(sli, field, 0.05, threshold / 1000))  # type: ignore[arg-type]
    if slo.error_rate is not None:
        found.append(Objective("errors", "error_rate", slo.error_rate))
    if slo.min_goodput is not None:
        found.append(Objective("goodput", "min_goodput", round(1 - slo.min_goodput, 12)))
    return found


def windows(window_s: float) -> list[BurnWindow]:
    """The burn windows that fit in the SLO's window (a 1d window has no 3d ticket alert)."""
    return [w for w in WINDOWS if w.long_s <= window_s]


def impossible(objective: Objective, window_s: float) -> str | None:
    """Why the page alert can never fire: its threshold is an error ratio above 1."""
    for burn in windows(window_s):
        if burn.severity == "page" and burn.factor(window_s) * objective.budget > 1:
            return (f"an error budget of {objective.budget:g} cannot page: spending {burn.budget_share:.0%} of it in "
                    f"{burn.long_s / 3600:g}h means a burn rate of {burn.factor(window_s):.2f} x {objective.budget:g}"
                    f" = {burn.factor(window_s) * objective.budget:.2f} > 1 (more than every request failing); "
                    "tighten the objective, or shorten `window` (over a shorter window, spending the same share of "
                    "the budget in an hour is a slower burn)")
    return None
