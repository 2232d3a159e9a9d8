"""Budgets at request time: refuse when a blocking budget is spent for its period, log `warn` overruns and alert_at
thresholds once each. The ledger is the truth. A gateway alone on its ledger keeps each budget's period total in
memory between short re-reads, so that a request does not pay a query per budget; replicas sharing a store read it
on every request (refresh_s 0), so that none admits a request on a total the others have already spent past.

The bound that gives: N replicas racing on a budget's last dollar overrun it by at most the cost of the requests
they had admitted (in flight) when the total reached the limit, since a request is metered when it ends."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from llmctl.gateway.errors import GatewayError
from llmctl.gateway.metering import Ledger, period_end, period_start
from llmctl.gateway.spec import BudgetSpec
from llmctl.gateway.store import StoreError

log = logging.getLogger("llmctl.gateway")

# How stale a cached period total may get before it is read again. Spend this process records is added to the cache
# as it happens; the re-read picks up anything else that wrote to the same ledger.
REFRESH_S = 1.0


@dataclass
class _Period:
    start: datetime
    end: datetime
    end_epoch: float
    spent: float
    read_at: float  # time.monotonic() of the last ledger read


@dataclass(frozen=True)
class BudgetState:
    """A budget's current period, as the metrics show it."""

    name: str
    limit_usd: float
    spent_usd: float
    period_end: float  # unix time


class Spending:
    def __init__(self, ledger: Ledger, budgets: dict[str, BudgetSpec], refresh_s: float = REFRESH_S,
                 serve_without_store: bool = False) -> None:
        """`serve_without_store`: while the store cannot be read, go on from the last total read plus what this
        process metered since (store_failure: open); else a StoreError reaches the caller."""
        self._ledger = ledger
        self._budgets = budgets
        self._refresh_s = refresh_s
        self._serve_without_store = serve_without_store
        self._periods: dict[str, _Period] = {}
        self._alerted: set[tuple[str, datetime, float]] = set()  # thresholds already reported (this process)
        self._warned: set[tuple[str, datetime]] = set()  # `warn` overruns already logged (this process)

    def _period(self, budget: BudgetSpec, added: float = 0.0) -> _Period:
        """The budget's current period; `added`: spend just recorded in the ledger (a re-read includes it)."""
        current = self._periods.get(budget.name)
        fresh = current is not None and time.time() < current.end_epoch
        if current is not None and fresh and time.monotonic() - current.read_at < self._refresh_s:
            current.spent += added
            return current
        now = datetime.now(timezone.utc)
        start = period_start(budget.period, now)
        end = period_end(budget.period, start)
        try:
            spent = self._ledger.spent(budget.name, budget.period, now)
        except StoreError:
            if not self._serve_without_store:
                raise
            # The last total known, re-read when the store answers again (read_at is left as it was).
            if current is not None and fresh:
                current.spent += added
                return current
            spent = added
        current = _Period(start, end, end.timestamp(), spent, time.monotonic())
        self._periods[budget.name] = current
        return current

    def check(self, budgets: list[str]) -> None:
        """Raise 429 if a blocking budget among `budgets` has nothing left this period."""
        for name in budgets:
            budget = self._budgets[name]
            period = self._period(budget)
            if period.spent < budget.limit_usd:
                continue
            if budget.on_exceed == "block":
                retry_after = max(1, int(period.end_epoch - time.time()) + 1)
                raise GatewayError(
                    429, f"budget '{name}' is exhausted: ${period.spent:.4f} spent of its ${budget.limit_usd:.2f} "
                         f"per {budget.period}; it resets at {period.end.isoformat()}",
                    "budget_exceeded", "budget_exceeded", headers={"retry-after": str(retry_after)})
            if (name, period.start) not in self._warned:
                self._warned.add((name, period.start))
                log.warning("budget %s is over its $%.2f per %s ($%.4f spent); on_exceed is warn, so requests "
                            "still pass", name, budget.limit_usd, budget.period, period.spent)

    def states(self) -> list[BudgetState]:
        """Every budget's current period: the ledger's total, re-read when the cached one is older than REFRESH_S."""
        states = []
        for budget in self._budgets.values():
            period = self._period(budget)
            states.append(BudgetState(budget.name, budget.limit_usd, period.spent, period.end_epoch))
        return states

    def recorded(self, budgets: list[str], usd: float) -> None:
        """After the ledger (or the spool) recorded `usd` against `budgets`: update the totals, log thresholds newly
        crossed. A store that cannot be read leaves the thresholds to a later request."""
        try:
            self._recorded(budgets, usd)
        except StoreError as error:
            log.warning("budget thresholds not checked: %s", error)

    def _recorded(self, budgets: list[str], usd: float) -> None:
        for name in budgets:
            budget = self._budgets[name]
            if not budget.alert_at and self._refresh_s == 0:
                continue  # nothing to report, and no total kept here that the spend must be added to
            period = self._period(budget, usd)
            ratio = period.spent / budget.limit_usd
            due = [t for t in budget.alert_at if ratio >= t and (name, period.start, t) not in self._alerted]
            if not due:
                continue
            # The ledger decides what is new (it remembers across restarts and processes); ask it only when a
            # threshold this process has not yet seen reported may have been reached.
            for threshold in sorted(self._ledger.crossed(budget)):
                log.warning("budget %s at %d%% of $%.2f per %s: $%.4f spent this period (since %s)", name,
                            round(threshold * 100), budget.limit_usd, budget.period, period.spent,
                            period.start.date().isoformat())
            self._alerted.update((name, period.start, t) for t in due)
