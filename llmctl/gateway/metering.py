"""The spend ledger: metered tokens and their price, persisted in the gateway's store (a SQLite file of its own,
or a PostgreSQL database its replicas share) so a restart loses nothing and replicas see one total.

The gateway writes; `llmctl status` / `llmctl cost` read the same store from another process. Each request is
metered once: its id is recorded with its spend in one transaction, so a record replayed from a spool, or retried,
adds nothing the second time.

Times are stored as UTC epoch seconds. Every period (day, week from Monday, month) starts at a UTC midnight, so
totals are kept per UTC day in `daily` beside the raw `spend` rows: a period's total is then a sum over at most 31
rows, where summing the raw rows would grow with traffic and sit on every request's path.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from llmctl.gateway.spec import BudgetSpec
from llmctl.gateway.store import Duplicate, Migration, SQLiteStore, Store

Period = Literal["day", "week", "month"]

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

_SQLITE_V1 = """
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

# The same tables in PostgreSQL's types: REAL there is 4 bytes, too coarse for dollars, so DOUBLE PRECISION.
_POSTGRES_V1 = (_SQLITE_V1.replace("id INTEGER PRIMARY KEY,", "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,")
                .replace(" WITHOUT ROWID", "").replace(" REAL", " DOUBLE PRECISION")
                .replace("tokens INTEGER", "tokens BIGINT").replace("requests INTEGER", "requests BIGINT"))

# Version 2: requests metered (by id: a replayed record counts once), rate-limit windows every replica shares, and
# which SQLite ledgers were moved into a shared store.
_V2 = """
CREATE TABLE IF NOT EXISTS metered (
    request_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metered_by_time ON metered (at);
CREATE TABLE IF NOT EXISTS rate_keys (
    key_id TEXT PRIMARY KEY          -- a row to lock: one admission per key at a time, across replicas
);
CREATE TABLE IF NOT EXISTS rate_buckets (
    key_id TEXT NOT NULL,
    second INTEGER NOT NULL,         -- UTC epoch second: a key's window is at most 61 rows, however busy the key
    requests INTEGER NOT NULL,       -- admitted in that second
    tokens INTEGER NOT NULL,         -- used by requests that ended in that second
    PRIMARY KEY (key_id, second)
);
CREATE TABLE IF NOT EXISTS ledger_identity (
    id TEXT NOT NULL                 -- a SQLite ledger's own id, given when it is first moved into a shared store
);
CREATE TABLE IF NOT EXISTS ledger_imports (
    ledger_id TEXT PRIMARY KEY,      -- a ledger moved in here (`llmctl gateway migrate-ledger`): never moved twice
    source TEXT NOT NULL,
    at REAL NOT NULL,
    spend_rows INTEGER NOT NULL
);
"""

MIGRATIONS = (
    Migration(sqlite=_SQLITE_V1, postgres=_POSTGRES_V1),
    Migration(sqlite=_V2, postgres=_V2.replace(" REAL", " DOUBLE PRECISION")),
)

SPEND_COLUMNS = ("at", "model", "key_id", "budget", "input_tokens", "output_tokens", "usd")
INSERT_SPEND = f"INSERT INTO spend ({', '.join(SPEND_COLUMNS)}) VALUES ({', '.join('?' for _ in SPEND_COLUMNS)})"

_ADD_DAILY = """
INSERT INTO daily (scope, name, day, usd, input_tokens, output_tokens, requests, unpriced_tokens)
VALUES (?, ?, ?, ?, ?, ?, 1, ?)
ON CONFLICT (scope, name, day) DO UPDATE SET
    usd = daily.usd + excluded.usd,
    input_tokens = daily.input_tokens + excluded.input_tokens,
    output_tokens = daily.output_tokens + excluded.output_tokens,
    requests = daily.requests + 1,
    unpriced_tokens = daily.unpriced_tokens + excluded.unpriced_tokens
"""

_ADD_CALLERS_DAILY = _ADD_DAILY.replace("daily", "callers_daily")

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
    # PostgreSQL sums BIGINT columns as NUMERIC, which psycopg reads as Decimal: plain numbers for JSON.
    usd, input_tokens, output_tokens, requests, unpriced = sums
    return {"spent_usd": float(usd), "input_tokens": int(input_tokens), "output_tokens": int(output_tokens),
            "requests": int(requests), "unpriced_tokens": int(unpriced)}


class Ledger:
    """`store`: a Store, or the path of a SQLite file (the embedded default)."""

    def __init__(self, store: Store | Path) -> None:
        self.store = SQLiteStore(store) if isinstance(store, Path) else store
        self.where = self.store.where
        try:
            self.store.migrate("ledger", MIGRATIONS)
        except BaseException:
            self.store.close()
            raise
        self._recorded = 0

    def assign(self, prompt: str, caller: str, weights: list[tuple[int, int]]) -> int:
        """The version `caller` is served of `prompt`, whose versions are (version, percent) pairs: the one it was
        given before while that one is still served; else the version furthest below its share of the callers
        assigned so far (the first on a tie), remembered from now on. Balancing by arrival rather than by hashing
        keeps a small group's split within one caller of the weights: 50 callers hashed 80/20 land 5.7 points off
        on average."""
        versions = [version for version, _ in weights]
        with self.store.transaction() as tx:
            row = tx.execute("SELECT version FROM assignments WHERE prompt = ? AND caller = ?",
                             (prompt, caller)).fetchone()
            if row is not None and row[0] in versions:
                return int(row[0])
            counts = dict(tx.execute("SELECT version, COUNT(*) FROM assignments WHERE prompt = ? GROUP BY version",
                                     (prompt,)).fetchall())
            total = sum(counts.get(version, 0) for version in versions) + 1
            chosen = max(weights, key=lambda pair: pair[1] * total / 100 - counts.get(pair[0], 0))[0]
            tx.execute("INSERT INTO assignments VALUES (?, ?, ?, ?) ON CONFLICT (prompt, caller) DO UPDATE SET "
                       "version = excluded.version, at = excluded.at", (prompt, caller, chosen, time.time()))
        return chosen

    def record(self, *, model: str, key_id: str, budgets: list[str], input_tokens: int, output_tokens: int,
               usd: float | None, at: datetime | None = None, answered: Answered | None = None,
               forget_before: float | None = None, team: str | None = None, request_id: str | None = None) -> bool:
        """Meter one request, by model, budget, key and team; `answered`: keep it for feedback (until
        `forget_before`, epoch seconds). `request_id`: the request's id, which makes the record count once
        however many times it is given; False when it already had been."""
        when = _utc(at)
        day = _epoch(period_start("day", when))
        unique_budgets = list(dict.fromkeys(budgets))
        unpriced = input_tokens + output_tokens if usd is None else 0
        added = (day, usd or 0.0, input_tokens, output_tokens, unpriced)
        try:
            self._record(when, model, key_id, unique_budgets, input_tokens, output_tokens, usd, added, answered,
                         forget_before, team, request_id)
        except Duplicate:  # metered already: the whole transaction was rolled back
            return False
        return True

    def _record(self, when: datetime, model: str, key_id: str, unique_budgets: list[str], input_tokens: int,
                output_tokens: int, usd: float | None, added: tuple[Any, ...], answered: Answered | None,
                forget_before: float | None, team: str | None, request_id: str | None) -> None:
        # Nothing is read back before the commit, so on PostgreSQL the whole record is one round trip; a request id
        # metered before fails the first insert (a unique key), which rolls back everything after it.
        with self.store.transaction() as tx:
            if request_id is not None:
                tx.execute("INSERT INTO metered VALUES (?, ?)", (request_id, when.timestamp()))
            tx.executemany(INSERT_SPEND, [
                (when.timestamp(), model, key_id, budget, input_tokens, output_tokens, usd)
                for budget in unique_budgets or [None]
            ])
            # The model's total counts the request once however many budgets it counts against.
            tx.executemany(_ADD_DAILY, [
                ("model", model, *added), *(("budget", budget, *added) for budget in unique_budgets)
            ])
            tx.executemany(_ADD_CALLERS_DAILY, [
                ("key", key_id, *added), *((("team", team, *added),) if team else ())])
            if answered is not None:
                tx.execute(
                    "INSERT INTO requests VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "answer_id = excluded.answer_id, at = excluded.at, model = excluded.model, "
                    "version = excluded.version, prompt_version = excluded.prompt_version, "
                    "key_id = excluded.key_id, cache_key = excluded.cache_key", (
                        answered.request_id, answered.answer_id, when.timestamp(), answered.model, answered.version,
                        answered.prompt_version, answered.key_id, answered.cache_key))
            self._recorded += 1
            if forget_before is not None and self._recorded % _FORGET_EVERY == 0:
                tx.execute("DELETE FROM requests WHERE at < ?", (forget_before,))
                # A spooled record is replayed within the feedback window or not at all, so its id can go too.
                tx.execute("DELETE FROM metered WHERE at < ?", (forget_before,))

    def admit(self, key_id: str, now: float, since: float,
              retry_after: Callable[[list[tuple[float, int]], list[tuple[float, int]]], int | None],
              count_request: bool = True) -> int | None:
        """One admission against a key's shared sliding window, kept in one-second buckets: `retry_after` gets the
        window's (bucket end, requests) and (bucket end, tokens), oldest first, and says None (the request is then
        counted in `now`'s bucket, unless not `count_request`: a key limited by tokens alone) or when to retry. A bucket counts until its whole second has left the window, so
        the window never admits more than the limit in any 60 s. One key's admissions are serialised across
        replicas by a lock on its row, so N replicas never admit more than the limit between them."""
        second = int(now)
        with self.store.transaction() as tx:
            tx.execute("INSERT INTO rate_keys VALUES (?) ON CONFLICT (key_id) DO UPDATE SET key_id = excluded.key_id",
                       (key_id,))
            tx.execute("DELETE FROM rate_buckets WHERE key_id = ? AND second + 1 <= ?", (key_id, since))
            rows = tx.execute("SELECT second, requests, tokens FROM rate_buckets WHERE key_id = ? ORDER BY second",
                              (key_id,)).fetchall()
            wait = retry_after([(at + 1, n) for at, n, _ in rows if n], [(at + 1, n) for at, _, n in rows if n])
            if wait is None and count_request:
                tx.execute("INSERT INTO rate_buckets VALUES (?, ?, 1, 0) ON CONFLICT (key_id, second) DO UPDATE SET "
                           "requests = rate_buckets.requests + 1", (key_id, second))
        return wait

    def add_tokens(self, key_id: str, now: float, tokens: int) -> None:
        self.store.query("INSERT INTO rate_buckets VALUES (?, ?, 0, ?) ON CONFLICT (key_id, second) DO UPDATE SET "
                         "tokens = rate_buckets.tokens + excluded.tokens", (key_id, int(now), tokens))

    def answered(self, answer: str, key_id: str, since: float) -> Answered | None:
        """The request `answer` names (its request id, else the id in its body: the latest such answer) if
        `key_id` asked it after `since` (epoch seconds); None for an unknown, expired or someone else's answer."""
        rows = self.store.query(
            "SELECT id, answer_id, model, version, prompt_version, key_id, cache_key FROM requests "
            "WHERE (id = ? OR answer_id = ?)"
            " AND key_id = ? AND at >= ? ORDER BY id = ? DESC, at DESC LIMIT 1",
            (answer, answer, key_id, since, answer))
        return Answered(*rows[0]) if rows else None

    def rate(self, answered: Answered, score: float, negative: bool, comment: str | None,
             at: datetime | None = None) -> None:
        """Keep a rating of an answer, replacing an earlier one of the same answer."""
        self.store.query(
            "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
            "at = excluded.at, score = excluded.score, negative = excluded.negative, comment = excluded.comment",
            (answered.request_id, _utc(at).timestamp(), answered.model, answered.version, answered.prompt_version,
             answered.key_id, score, int(negative), comment))

    def ratings(self, since: datetime) -> dict[str, dict[str, int]]:
        """Per model, the ratings given since `since` and how many were negative."""
        rows = self.store.query("SELECT model, COUNT(*), SUM(negative) FROM feedback WHERE at >= ? GROUP BY model",
                                (_utc(since).timestamp(),))
        return {model: {"ratings": int(count), "negative": int(negative or 0)} for model, count, negative in rows}

    def spent(self, budget: str, period: Period, at: datetime | None = None) -> float:
        """Priced spend (USD) against `budget` in the period that contains `at` (default: now)."""
        start = period_start(period, _utc(at))
        rows = self.store.query(
            "SELECT COALESCE(SUM(usd), 0.0) FROM daily WHERE scope = 'budget' AND name = ? AND day >= ? AND day < ?",
            (budget, _epoch(start), _epoch(period_end(period, start))))
        return float(rows[0][0])

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
            with self.store.transaction() as tx:
                inserted = tx.execute(
                    "INSERT INTO alerts (budget, period_start, threshold, at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (budget.name, start, threshold, when.timestamp())).rowcount
            if inserted:
                new.append(threshold)
        return new

    def _alerts(self, budget: str, start: int) -> list[float]:
        rows = self.store.query(
            "SELECT threshold FROM alerts WHERE budget = ? AND period_start = ? ORDER BY threshold", (budget, start))
        return [threshold for (threshold,) in rows]

    def usage(self, at: datetime | None = None, *, budgets: Iterable[BudgetSpec] = ()) -> dict[str, Any]:
        """JSON-able totals for status/cost: each given budget over its own current period (a budget's period is
        in its spec, not in the ledger), and each model over the current month. `unpriced_tokens` counts tokens
        of models without a price, so a caller can say they could not be priced instead of showing $0."""
        when = _utc(at)
        month = period_start("month", when)
        month_range = (_epoch(month), _epoch(period_end("month", month)))
        per_model = {name: _totals(sums) for name, *sums in self.store.query(_MODEL_TOTALS, month_range)}
        callers: dict[str, dict[str, Any]] = {"key": {}, "team": {}}
        for scope, name, *sums in self.store.query(_CALLER_TOTALS, month_range):
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
        sums = self.store.query(_BUDGET_TOTALS, (spec.name, _epoch(start), _epoch(period_end(spec.period, start))))
        return {"period": spec.period, "period_start": start.isoformat(), **_totals(sums[0]),
                "alerts": self._alerts(spec.name, _epoch(start))}

    def close(self) -> None:
        self.store.close()
