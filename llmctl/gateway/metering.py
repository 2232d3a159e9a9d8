"""The spend ledger: metered tokens and their price, persisted in SQLite so a gateway restart loses nothing.

The gateway writes; `llmctl status` / `llmctl cost` read the same file from another process. WAL mode lets those
readers run beside the writer, and a busy timeout makes a second writer wait instead of failing.

Times are stored as UTC epoch seconds. Every period (day, week from Monday, month) starts at a UTC midnight, so
totals are kept per UTC day in `daily` beside the raw `spend` rows: a period's total is then a sum over at most 31
rows, where summing the raw rows would grow with traffic and sit on every request's path.
"""
from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import filelock

from llmctl.gateway.spec import BudgetSpec

Period = Literal["day", "week", "month"]

# Writes are a few rows each, so a waiting writer gets the lock within milliseconds; the timeout is only the point
# at which something is wrong (a process holding a transaction open), not a wait anyone should see.
BUSY_TIMEOUT_S = 10.0

# Totals per UTC day. Per key and team in a table of their own: `daily`'s scopes are fixed by a CHECK that ledgers
# on disk already have.
_DAILY = """CREATE TABLE IF NOT EXISTS {table} (
    scope TEXT NOT NULL CHECK (scope IN ({scopes})),
    name TEXT NOT NULL,
    day INTEGER NOT NULL,            -- UTC midnight, epoch seconds
    usd REAL NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    unpriced_tokens INTEGER NOT NULL,
    PRIMARY KEY (scope, name, day)
) WITHOUT ROWID;"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,                -- UTC epoch seconds
    model TEXT NOT NULL,
    key_id TEXT NOT NULL,
    budget TEXT,                     -- one row per budget the request counts against; NULL when it counts against none
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    usd REAL                         -- NULL: the model has no price, the tokens are metered but not priced
);
{daily}
{callers_daily}
CREATE TABLE IF NOT EXISTS assignments (
    prompt TEXT NOT NULL,
    caller TEXT NOT NULL,            -- sha256 of the request's `user`, else of its key's name: never the value itself
    version INTEGER NOT NULL,        -- the prompt version this caller is served, for as long as it is served
    at REAL NOT NULL,                -- UTC epoch seconds of the first request
    PRIMARY KEY (prompt, caller)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,             -- the gateway's request id (x-request-id)
    answer_id TEXT,                  -- the id in the answer's body, as the upstream set it
    at REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,           -- stable | canary
    prompt_version INTEGER,
    key_id TEXT NOT NULL,            -- who may rate it: the key that asked
    cache_key TEXT                   -- the cached answer it gave or stored, which a negative rating evicts
);
CREATE INDEX IF NOT EXISTS requests_by_answer ON requests (answer_id);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY,     -- one rating per answer: a new one replaces it
    at REAL NOT NULL,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    prompt_version INTEGER,
    key_id TEXT NOT NULL,
    score REAL NOT NULL,
    negative INTEGER NOT NULL,
    comment TEXT                     -- the rater's words; never the prompt or the answer
);
CREATE INDEX IF NOT EXISTS feedback_by_time ON feedback (at);
CREATE TABLE IF NOT EXISTS alerts (
    budget TEXT NOT NULL,
    period_start INTEGER NOT NULL,   -- UTC epoch seconds
    threshold REAL NOT NULL,         -- fraction of the budget's limit_usd
    at REAL NOT NULL,
    UNIQUE (budget, period_start, threshold)
);
""".format(daily=_DAILY.format(table="daily", scopes="'budget', 'model'"),
           callers_daily=_DAILY.format(table="callers_daily", scopes="'key', 'team'"))

_INSERT_SPEND = """
INSERT INTO spend (at, model, key_id, budget, input_tokens, output_tokens, usd) VALUES (?, ?, ?, ?, ?, ?, ?)
"""

_ADD_DAILY = """
INSERT INTO daily (scope, name, day, usd, input_tokens, output_tokens, requests, unpriced_tokens)
VALUES (?, ?, ?, ?, ?, ?, 1, ?)
ON CONFLICT (scope, name, day) DO UPDATE SET
    usd = usd + excluded.usd,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    requests = requests + 1,
    unpriced_tokens = unpriced_tokens + excluded.unpriced_tokens
"""

_ADD_CALLERS_DAILY = _ADD_DAILY.replace("INSERT INTO daily", "INSERT INTO callers_daily")

_SUMS = """COALESCE(SUM(usd), 0.0), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),
    COALESCE(SUM(requests), 0), COALESCE(SUM(unpriced_tokens), 0)"""
_MODEL_TOTALS = f"SELECT name, {_SUMS} FROM daily WHERE scope = 'model' AND day >= ? AND day < ? GROUP BY name"
_CALLER_TOTALS = (f"SELECT scope, name, {_SUMS} FROM callers_daily WHERE day >= ? AND day < ? GROUP BY scope, name")
_BUDGET_TOTALS = f"SELECT {_SUMS} FROM daily WHERE scope = 'budget' AND name = ? AND day >= ? AND day < ?"


# Answers older than the feedback window are forgotten in batches, every this many recorded: not on every request.
_FORGET_EVERY = 1000


@dataclass(frozen=True)
class Answered:
    """An answered request, as feedback finds it: which version of what served it, and who asked."""

    request_id: str
    answer_id: str | None
    model: str
    version: str
    prompt_version: int | None
    key_id: str
    cache_key: str | None = None


def _utc(at: datetime | None) -> datetime:
    if at is None:
        return datetime.now(timezone.utc)
    if at.tzinfo is None:
        # A naive time would be read as local time by .timestamp() and land spend in the wrong day.
        raise ValueError(f"naive datetime {at.isoformat()}: pass a timezone-aware time")
    return at.astimezone(timezone.utc)


def period_start(period: Period, at: datetime) -> datetime:
    day = _utc(at).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: Period, start: datetime) -> datetime:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(weeks=1)
    return (start + timedelta(days=32)).replace(day=1)


def _epoch(at: datetime) -> int:
    return int(at.timestamp())


def _totals(sums: Sequence[Any]) -> dict[str, Any]:
    usd, input_tokens, output_tokens, requests, unpriced = sums
    return {"spent_usd": usd, "input_tokens": input_tokens, "output_tokens": output_tokens, "requests": requests,
            "unpriced_tokens": unpriced}


class Ledger:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), not opened behind our back.
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        # Switching a new file to WAL fails at once with 'database is locked' when another process is opening it
        # too (SQLite skips the busy handler there), so the setup is serialised by a file lock instead.
        with filelock.FileLock(f"{path}.lock", timeout=BUSY_TIMEOUT_S):
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        # NORMAL in WAL mode: no fsync per commit; a power cut may lose the last commits, never corrupt the file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._recorded = 0

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes can fail with
        # SQLITE_BUSY when another process committed meanwhile, and the busy timeout does not retry that case.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def assign(self, prompt: str, caller: str, weights: list[tuple[int, int]]) -> int:
        """The version `caller` is served of `prompt`, whose versions are (version, percent) pairs: the one it was
        given before while that one is still served; else the version furthest below its share of the callers
        assigned so far (the first on a tie), remembered from now on. Balancing by arrival rather than by hashing
        keeps a small group's split within one caller of the weights: 50 callers hashed 80/20 land 5.7 points off
        on average."""
        versions = [version for version, _ in weights]
        with self._transaction():
            row = self._db.execute("SELECT version FROM assignments WHERE prompt = ? AND caller = ?",
                                   (prompt, caller)).fetchone()
            if row is not None and row[0] in versions:
                return int(row[0])
            counts = dict(self._db.execute("SELECT version, COUNT(*) FROM assignments WHERE prompt = ? "
                                           "GROUP BY version", (prompt,)).fetchall())
            total = sum(counts.get(version, 0) for version in versions) + 1
            chosen = max(weights, key=lambda pair: pair[1] * total / 100 - counts.get(pair[0], 0))[0]
            self._db.execute("INSERT OR REPLACE INTO assignments VALUES (?, ?, ?, ?)",
                             (prompt, caller, chosen, time.time()))
        return chosen

    def record(self, *, model: str, key_id: str, budgets: list[str], input_tokens: int, output_tokens: int,
               usd: float | None, at: datetime | None = None, answered: Answered | None = None,
               forget_before: float | None = None, team: str | None = None) -> None:
        """Meter one request, by model, budget, key and team; `answered`: keep it for feedback (until
        `forget_before`, epoch seconds)."""
        when = _utc(at)
        day = _epoch(period_start("day", when))
        unique_budgets = list(dict.fromkeys(budgets))
        unpriced = input_tokens + output_tokens if usd is None else 0
        added = (day, usd or 0.0, input_tokens, output_tokens, unpriced)
        with self._transaction():
            self._db.executemany(_INSERT_SPEND, [
                (when.timestamp(), model, key_id, budget, input_tokens, output_tokens, usd)
                for budget in unique_budgets or [None]
            ])
            # The model's total counts the request once however many budgets it counts against.
            self._db.executemany(_ADD_DAILY, [
                ("model", model, *added), *(("budget", budget, *added) for budget in unique_budgets)
            ])
            self._db.executemany(_ADD_CALLERS_DAILY, [
                ("key", key_id, *added), *((("team", team, *added),) if team else ())])
            if answered is not None:
                self._db.execute("INSERT OR REPLACE INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
                    answered.request_id, answered.answer_id, when.timestamp(), answered.model, answered.version,
                    answered.prompt_version, answered.key_id, answered.cache_key))
                self._recorded += 1
                if forget_before is not None and self._recorded % _FORGET_EVERY == 0:
                    self._db.execute("DELETE FROM requests WHERE at < ?", (forget_before,))

    def answered(self, answer: str, key_id: str, since: float) -> Answered | None:
        """The request `answer` names (its request id, else the id in its body: the latest such answer) if
        `key_id` asked it after `since` (epoch seconds); None for an unknown, expired or someone else's answer."""
        row = self._db.execute(
            "SELECT id, answer_id, model, version, prompt_version, key_id, cache_key FROM requests "
            "WHERE (id = ? OR answer_id = ?)"
            " AND key_id = ? AND at >= ? ORDER BY id = ? DESC, at DESC LIMIT 1",
            (answer, answer, key_id, since, answer)).fetchone()
        return Answered(*row) if row is not None else None

    def rate(self, answered: Answered, score: float, negative: bool, comment: str | None,
             at: datetime | None = None) -> None:
        """Keep a rating of an answer, replacing an earlier one of the same answer."""
        self._db.execute("INSERT OR REPLACE INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            answered.request_id, _utc(at).timestamp(), answered.model, answered.version, answered.prompt_version,
            answered.key_id, score, int(negative), comment))

    def ratings(self, since: datetime) -> dict[str, dict[str, int]]:
        """Per model, the ratings given since `since` and how many were negative."""
        rows = self._db.execute("SELECT model, COUNT(*), SUM(negative) FROM feedback WHERE at >= ? GROUP BY model",
                                (_utc(since).timestamp(),))
        return {model: {"ratings": count, "negative": negative or 0} for model, count, negative in rows}

    def spent(self, budget: str, period: Period, at: datetime | None = None) -> float:
        """Priced spend (USD) against `budget` in the period that contains `at` (default: now)."""
        start = period_start(period, _utc(at))
        row = self._db.execute(
            "SELECT COALESCE(SUM(usd), 0.0) FROM daily WHERE scope = 'budget' AND name = ? AND day >= ? AND day < ?",
            (budget, _epoch(start), _epoch(period_end(period, start))),
        ).fetchone()
        return row[0]

    def crossed(self, budget: BudgetSpec, at: datetime | None = None) -> list[float]:
        """alert_at thresholds reached this period and not returned before (by this or any other process)."""
        when = _utc(at)
        spent = self.spent(budget.name, budget.period, when)
        reached = [t for t in sorted(set(budget.alert_at)) if spent >= t * budget.limit_usd]
        if not reached:
            return []
        start = _epoch(period_start(budget.period, when))
        # Read first so that, once thresholds are past, later requests do not take the write lock for nothing.
        known = set(self._alerts(budget.name, start))
        new = []
        for threshold in reached:
            if threshold in known:
                continue
            # The unique constraint decides who reports a threshold when two processes race for it.
            inserted = self._db.execute(
                "INSERT OR IGNORE INTO alerts (budget, period_start, threshold, at) VALUES (?, ?, ?, ?)",
                (budget.name, start, threshold, when.timestamp()),
            ).rowcount
            if inserted:
                new.append(threshold)
        return new

    def _alerts(self, budget: str, start: int) -> list[float]:
        rows = self._db.execute(
            "SELECT threshold FROM alerts WHERE budget = ? AND period_start = ? ORDER BY threshold", (budget, start)
        )
        return [threshold for (threshold,) in rows]

    def usage(self, at: datetime | None = None, *, budgets: Iterable[BudgetSpec] = ()) -> dict[str, Any]:
        """JSON-able totals for status/cost: each given budget over its own current period (a budget's period is
        in its spec, not in the ledger), and each model over the current month. `unpriced_tokens` counts tokens
        of models without a price, so a caller can say they could not be priced instead of showing $0."""
        when = _utc(at)
        month = period_start("month", when)
        models = self._db.execute(_MODEL_TOTALS, (_epoch(month), _epoch(period_end("month", month))))
        per_model = {name: _totals(sums) for name, *sums in models}
        callers: dict[str, dict[str, Any]] = {"key": {}, "team": {}}
        for scope, name, *sums in self._db.execute(_CALLER_TOTALS, (_epoch(month),
                                                                     _epoch(period_end("month", month)))):
            callers[scope][name] = _totals(sums)
        return {
            "at": when.isoformat(),
            "budgets": {spec.name: self._budget_usage(spec, when) for spec in budgets},
            "models_period_start": month.isoformat(),
            "models": per_model,
            "keys": callers["key"],
            "teams": callers["team"],
            "unpriced_tokens": sum(totals["unpriced_tokens"] for totals in per_model.values()),
            "feedback_24h": self.ratings(when - timedelta(days=1)),
        }

    def _budget_usage(self, spec: BudgetSpec, when: datetime) -> dict[str, Any]:
        start = period_start(spec.period, when)
        # An aggregate without GROUP BY always yields one row: zeros for a budget nothing was spent against yet.
        sums = self._db.execute(_BUDGET_TOTALS, (spec.name, _epoch(start), _epoch(period_end(spec.period, start))))
        return {"period": spec.period, "period_start": start.isoformat(), **_totals(sums.fetchone()),
                "alerts": self._alerts(spec.name, _epoch(start))}

    def close(self) -> None:
        self._db.close()
