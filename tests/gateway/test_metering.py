"""The spend ledger: periods in UTC, persistence across restarts and processes, alerts once per period."""
from __future__ import annotations

import json
import multiprocessing
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from llmctl.gateway.metering import MIGRATIONS, Ledger, period_start
from llmctl.gateway.spec import BudgetSpec
from llmctl.gateway.store import PostgresStore, SchemaTooNew

UTC = timezone.utc
WED = datetime(2024, 1, 3, 15, 30, tzinfo=UTC)  # 2024-01-01 was a Monday


def budget(name: str = "team", limit_usd: float = 10.0, period: str = "month",
           alert_at: list[float] | None = None) -> BudgetSpec:
    return BudgetSpec(name=name, limit_usd=limit_usd, period=period, alert_at=alert_at or [], on_exceed="block")


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """The same ledger on each store: its own SQLite file, and a real PostgreSQL server."""
    if request.param == "sqlite":
        ledger = Ledger(tmp_path / "state" / "spend.db")
    else:
        ledger = Ledger(PostgresStore(request.getfixturevalue("postgres").dsn))
    yield ledger
    ledger.close()


def spend(ledger: Ledger, usd: float | None, at: datetime, budgets: list[str] | None = None,
          model: str = "chat", tokens: tuple[int, int] = (100, 50)) -> None:
    ledger.record(model=model, key_id="k", budgets=["team"] if budgets is None else budgets,
                  input_tokens=tokens[0], output_tokens=tokens[1], usd=usd, at=at)


@pytest.mark.parametrize(("period", "expected"), [
    ("day", datetime(2024, 1, 3, tzinfo=UTC)),
    ("week", datetime(2024, 1, 1, tzinfo=UTC)),
    ("month", datetime(2024, 1, 1, tzinfo=UTC)),
])
def test_period_start(period: str, expected: datetime) -> None:
    assert period_start(period, WED) == expected


def test_period_start_is_taken_in_utc() -> None:
    # 01:00 on Monday 1 January at +02:00 is 23:00 on Sunday 31 December in UTC.
    at = datetime(2024, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert period_start("day", at) == datetime(2023, 12, 31, tzinfo=UTC)
    assert period_start("week", at) == datetime(2023, 12, 25, tzinfo=UTC)
    assert period_start("month", at) == datetime(2023, 12, 1, tzinfo=UTC)


def test_naive_times_are_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="naive"):
        period_start("day", datetime(2024, 1, 3))
    with pytest.raises(ValueError, match="naive"):
        spend(ledger, 1.0, datetime(2024, 1, 3))


def test_database_is_in_wal_mode(tmp_path: Path) -> None:
    Ledger(tmp_path / "state" / "spend.db").close()
    db = sqlite3.connect(tmp_path / "state" / "spend.db")
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


def test_a_request_against_two_budgets_is_recorded_for_each(ledger: Ledger) -> None:
    spend(ledger, 0.25, WED, budgets=["team", "org"])
    assert ledger.spent("team", "month", WED) == 0.25
    assert ledger.spent("org", "month", WED) == 0.25
    rows = ledger.store.query("SELECT budget, model, key_id, input_tokens, output_tokens, usd FROM spend "
                              "ORDER BY budget")
    assert [tuple(row) for row in rows] == [("org", "chat", "k", 100, 50, 0.25), ("team", "chat", "k", 100, 50, 0.25)]
    # The model's own totals count the request once.
    assert ledger.usage(WED)["models"]["chat"] == {"spent_usd": 0.25, "input_tokens": 100, "output_tokens": 50,
                                                   "requests": 1, "unpriced_tokens": 0}


def test_a_request_against_no_budget_is_still_metered(ledger: Ledger) -> None:
    spend(ledger, 0.5, WED, budgets=[])
    assert ledger.usage(WED)["models"]["chat"]["spent_usd"] == 0.5
    assert ledger.spent("team", "month", WED) == 0.0


@pytest.mark.parametrize(("period", "before", "after"), [
    ("day", datetime(2024, 1, 3, 23, 59, 59, tzinfo=UTC), datetime(2024, 1, 4, 0, 0, tzinfo=UTC)),
    ("week", datetime(2024, 1, 7, 23, 59, 59, tzinfo=UTC), datetime(2024, 1, 8, 0, 0, tzinfo=UTC)),
    ("month", datetime(2024, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2024, 2, 1, 0, 0, tzinfo=UTC)),
])
def test_spend_rolls_over_with_the_period(ledger: Ledger, period: str, before: datetime, after: datetime) -> None:
    spend(ledger, 1.0, before)
    spend(ledger, 2.0, after)
    assert ledger.spent("team", period, before) == 1.0
    assert ledger.spent("team", period, after) == 2.0


def test_spend_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    first = Ledger(path)
    spend(first, 3.5, WED)
    first.close()
    second = Ledger(path)
    assert second.spent("team", "month", WED) == 3.5
    second.close()


def test_thresholds_are_returned_once_per_period(ledger: Ledger) -> None:
    team = budget(alert_at=[0.5, 0.8, 1.0])
    spend(ledger, 4.0, WED)
    assert ledger.crossed(team, WED) == []
    spend(ledger, 2.0, WED)
    assert ledger.crossed(team, WED) == [0.5]
    assert ledger.crossed(team, WED) == []
    spend(ledger, 5.0, WED)
    assert ledger.crossed(team, WED) == [0.8, 1.0]
    assert ledger.crossed(team, WED) == []
    next_month = datetime(2024, 2, 1, tzinfo=UTC)
    spend(ledger, 6.0, next_month)
    assert ledger.crossed(team, next_month) == [0.5]


def test_thresholds_are_not_repeated_after_a_restart(tmp_path: Path) -> None:
    path, team = tmp_path / "spend.db", budget(alert_at=[0.5])
    first = Ledger(path)
    spend(first, 6.0, WED)
    assert first.crossed(team, WED) == [0.5]
    first.close()
    second = Ledger(path)
    assert second.crossed(team, WED) == []
    assert second.usage(WED, budgets=[team])["budgets"]["team"]["alerts"] == [0.5]
    second.close()


def test_usage_reports_budgets_models_and_unpriced_tokens(ledger: Ledger) -> None:
    spend(ledger, 1.0, WED, model="chat")
    spend(ledger, None, WED, model="local", tokens=(300, 200))
    spend(ledger, 7.0, datetime(2023, 12, 31, tzinfo=UTC), model="chat")  # last month: not in the totals
    usage = ledger.usage(WED, budgets=[budget(period="week"), budget(name="idle", period="day")])
    assert json.loads(json.dumps(usage)) == usage
    assert usage["budgets"] == {
        "team": {"period": "week", "period_start": "2024-01-01T00:00:00+00:00", "spent_usd": 1.0,
                 "input_tokens": 400, "output_tokens": 250, "requests": 2, "unpriced_tokens": 500, "alerts": []},
        "idle": {"period": "day", "period_start": "2024-01-03T00:00:00+00:00", "spent_usd": 0.0,
                 "input_tokens": 0, "output_tokens": 0, "requests": 0, "unpriced_tokens": 0, "alerts": []},
    }
    assert usage["models_period_start"] == "2024-01-01T00:00:00+00:00"
    assert usage["models"] == {
        "chat": {"spent_usd": 1.0, "input_tokens": 100, "output_tokens": 50, "requests": 1, "unpriced_tokens": 0},
        "local": {"spent_usd": 0.0, "input_tokens": 300, "output_tokens": 200, "requests": 1,
                  "unpriced_tokens": 500},
    }
    assert usage["unpriced_tokens"] == 500


def test_a_second_ledger_on_the_same_file_reads_what_the_first_wrote(tmp_path: Path) -> None:
    path = tmp_path / "spend.db"
    gateway, status = Ledger(path), Ledger(path)
    spend(gateway, 1.5, WED)
    assert status.spent("team", "month", WED) == 1.5
    spend(gateway, 1.0, WED)
    assert status.usage(WED)["models"]["chat"]["requests"] == 2
    gateway.close()
    status.close()


def _write_records(path: Path, start: Barrier, n: int) -> None:
    start.wait()  # both processes open the new file at the same moment,
    ledger = Ledger(path)
    start.wait()  # and write at the same moment (opening may have kept one waiting)
    for _ in range(n):
        spend(ledger, 0.01, WED)
    ledger.close()


def test_two_processes_write_concurrently_without_losing_a_record(tmp_path: Path) -> None:
    # fork: the worker is a function of this test module, which a spawned interpreter could not import by name.
    context = multiprocessing.get_context("fork")
    # The timeout: a worker that fails must not leave the other waiting at the barrier for ever.
    path, start = tmp_path / "spend.db", context.Barrier(2, timeout=60)
    workers = [context.Process(target=_write_records, args=(path, start, 200)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [worker.exitcode for worker in workers] == [0, 0]  # a 'database is locked' error would exit 1
    ledger = Ledger(path)
    assert ledger.usage(WED)["models"]["chat"]["requests"] == 400
    assert ledger.spent("team", "month", WED) == pytest.approx(4.0)
    ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM spend").fetchone() == (400,)
    db.close()


def test_a_record_given_twice_under_one_request_id_counts_once(ledger: Ledger) -> None:
    # What a spool replayed after a crash, or a retried write, gives: the same request again.
    first = ledger.record(model="chat", key_id="k", budgets=["team"], input_tokens=10, output_tokens=5, usd=0.5,
                          at=WED, request_id="req-1")
    again = ledger.record(model="chat", key_id="k", budgets=["team"], input_tokens=10, output_tokens=5, usd=0.5,
                          at=WED, request_id="req-1")
    assert (first, again) == (True, False)
    assert ledger.spent("team", "month", WED) == 0.5
    assert ledger.usage(WED)["models"]["chat"]["requests"] == 1


def test_a_store_migrated_by_a_newer_llmctl_is_refused(ledger: Ledger) -> None:
    ledger.store.query("UPDATE schema_versions SET version = 99 WHERE component = 'ledger'")
    with pytest.raises(SchemaTooNew, match="schema version 99, newer than the 2 this llmctl knows"):
        ledger.store.migrate("ledger", MIGRATIONS)


def test_reopening_a_migrated_store_changes_nothing(ledger: Ledger) -> None:
    spend(ledger, 1.0, WED)
    assert ledger.store.migrate("ledger", MIGRATIONS) == len(MIGRATIONS)
    assert ledger.spent("team", "month", WED) == 1.0


def test_the_shared_window_admits_up_to_the_limit_and_says_when_the_oldest_leaves(ledger: Ledger) -> None:
    def retry_after(requests: list[tuple[float, int]], tokens: list[tuple[float, int]]) -> int | None:
        counted = sum(n for _, n in requests)  # two a minute: until the oldest second leaves the window
        return None if counted < 2 else int(requests[0][0] + 60 - now)

    def admit(key: str) -> int | None:
        return ledger.admit(key, now, now - 60, retry_after)

    now = 1000.2
    assert admit("k") is None
    now = 1010.5
    assert admit("k") is None
    now = 1020.0
    assert admit("k") == 41  # the second 1000 has wholly left the window at 1061
    now = 1061.0
    assert admit("k") is None
    assert admit("other") is None  # each key has its own window
