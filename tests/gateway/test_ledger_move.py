"""`llmctl gateway migrate-ledger`: a gateway's SQLite ledger moved into the shared PostgreSQL store, once."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from llmctl.gateway.metering import Answered, Ledger
from llmctl.gateway.spec import BudgetSpec
from llmctl.gateway.store import PostgresStore
from postgres_server import PostgresServer
from support import QUICKSTART, Run

DSN_ENV = "LLMCTL_TEST_STORE_DSN"
AT = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)
BUDGET = BudgetSpec(name="team-monthly", limit_usd=100, period="month", on_exceed="block")


def _config(tmp_path: Path, store: dict | None = None) -> Path:
    config = yaml.safe_load(QUICKSTART.read_text())
    if store is not None:
        config["gateway"]["store"] = store
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sqlite_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "old" / "spend.sqlite"
    ledger = Ledger(path)
    for number in range(3):
        ledger.record(model="assistant", key_id="quickstart", budgets=["team-monthly"], input_tokens=100,
                      output_tokens=50, usd=0.25, at=AT, team="support", request_id=f"req-{number}",
                      answered=Answered(f"req-{number}", None, "assistant", "stable", 1, "quickstart"))
    ledger.rate(Answered("req-0", None, "assistant", "stable", 1, "quickstart"), -1.0, True, "wrong", at=AT)
    ledger.close()
    return path


def _usage(postgres: PostgresServer) -> dict:
    ledger = Ledger(PostgresStore(postgres.dsn))
    try:
        return ledger.usage(AT, budgets=[BUDGET])
    finally:
        ledger.close()


def test_the_ledger_moves_once_and_adds_to_what_the_store_already_metered(llmctl: Run, tmp_path: Path,
                                                                          postgres: PostgresServer) -> None:
    source = _sqlite_ledger(tmp_path)
    # A replica already metered into the store on the same day: the move adds to it.
    ledger = Ledger(PostgresStore(postgres.dsn))
    ledger.record(model="assistant", key_id="quickstart", budgets=["team-monthly"], input_tokens=10, output_tokens=5,
                  usd=1.0, at=AT, request_id="req-store")
    ledger.close()
    config = _config(tmp_path, {"env": DSN_ENV})
    env = {DSN_ENV: postgres.dsn}

    first = llmctl("gateway", "migrate-ledger", "--file", str(config), "--from", str(source), env=env)
    assert first.returncode == 0, first.stderr
    assert "moved" in first.stdout and "$0.7500 of spend" in first.stdout
    assert postgres.dsn.split("@")[1] in first.stdout  # names the store it moved into
    usage = _usage(postgres)
    assert usage["budgets"]["team-monthly"]["spent_usd"] == 1.75
    assert usage["models"]["assistant"]["requests"] == 4
    assert usage["keys"]["quickstart"]["input_tokens"] == 310
    assert usage["teams"]["support"]["spent_usd"] == 0.75
    assert usage["feedback_24h"] == {"assistant": {"ratings": 1, "negative": 1}}

    again = llmctl("gateway", "migrate-ledger", "--file", str(config), "--from", str(source), "--format", "json",
                   env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["already"] is True and report["moved_at"]
    assert _usage(postgres) == usage  # nothing counted twice


def test_without_a_store_declared_it_says_what_to_declare(llmctl: Run, tmp_path: Path) -> None:
    done = llmctl("gateway", "migrate-ledger", "--file", str(_config(tmp_path)), "--from",
                  str(_sqlite_ledger(tmp_path)))
    assert done.returncode == 1
    assert "gateway.store is not declared" in done.stderr and "Traceback" not in done.stderr


def test_a_dsn_variable_not_set_is_named(llmctl: Run, tmp_path: Path) -> None:
    done = llmctl("gateway", "migrate-ledger", "--file", str(_config(tmp_path, {"env": "LLMCTL_NOT_SET_DSN"})),
                  "--from", str(_sqlite_ledger(tmp_path)))
    assert done.returncode == 1
    assert "LLMCTL_NOT_SET_DSN, which is not set" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_ledger_file_is_named(llmctl: Run, tmp_path: Path, postgres: PostgresServer) -> None:
    done = llmctl("gateway", "migrate-ledger", "--file", str(_config(tmp_path, {"env": DSN_ENV})), "--from",
                  str(tmp_path / "nothing.sqlite"), env={DSN_ENV: postgres.dsn})
    assert done.returncode == 1
    assert "nothing.sqlite: no SQLite ledger there" in done.stderr
