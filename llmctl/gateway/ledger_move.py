"""`llmctl gateway migrate-ledger`: a gateway's SQLite ledger moved into the shared store its config now declares.

Once per ledger: the SQLite file is given an id, and the store records that id in the same transaction as the rows
it takes in, so running the move again (after a success, or after a failure that rolled it back) moves nothing
twice. Totals per day are added to what the store already holds for the same day (replicas may have metered into it
before the move); rows with an identity of their own (answers kept for feedback, ratings, prompt assignments, alerts
already reported, requests metered) keep the store's where both have one.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from llmctl.config.schema import Gateway
from llmctl.errors import LlmctlError
from llmctl.gateway.metering import INSERT_SPEND, MIGRATIONS, SPEND_COLUMNS, Ledger
from llmctl.gateway.build import LEDGER_FILE, STORE_DSN_ENV, gateway_dir, store_spec
from llmctl.gateway.store import PostgresStore, SQLiteStore, Store, StoreError, read_dsn

_SUMMED = ("usd", "input_tokens", "output_tokens", "requests", "unpriced_tokens")
_KEPT = {  # table: its columns, copied where the store has no row of the same identity
    "assignments": ("prompt", "caller", "version", "at"),
    "requests": ("id", "answer_id", "at", "model", "version", "prompt_version", "key_id", "cache_key"),
    "feedback": ("request_id", "at", "model", "version", "prompt_version", "key_id", "score", "negative", "comment"),
    "alerts": ("budget", "period_start", "threshold", "at"),
    "metered": ("request_id", "at"),
}


@dataclass
class Moved:
    source: str
    target: str
    ledger_id: str
    moved_at: str | None = None  # when it was moved, if this run found it already moved
    rows: dict[str, int] = field(default_factory=dict)
    spent_usd: float = 0.0

    @property
    def already(self) -> bool:
        return self.moved_at is not None


def _identity(source: Ledger) -> str:
    rows = source.store.query("SELECT id FROM ledger_identity")
    if rows:
        return str(rows[0][0])
    given = str(uuid.uuid4())
    source.store.query("INSERT INTO ledger_identity VALUES (?)", (given,))
    return given


def move_ledger(path: Path, target: Store) -> Moved:
    """Move the SQLite ledger at `path` into `target` (a StoreError when either cannot be used)."""
    if not path.is_file():
        raise LlmctlError(f"{path}: no SQLite ledger there; give the gateway's ledger with --from PATH")
    source = Ledger(SQLiteStore(path))
    try:
        target.migrate("ledger", MIGRATIONS)  # the store's tables, up to date
        moved = Moved(source=str(path), target=target.where, ledger_id=_identity(source))
        with target.transaction() as tx:
            claimed = tx.execute("INSERT INTO ledger_imports VALUES (?, ?, ?, 0) ON CONFLICT (ledger_id) DO NOTHING",
                                 (moved.ledger_id, str(path), datetime.now(timezone.utc).timestamp())).rowcount
            if not claimed:
                at = tx.execute("SELECT at FROM ledger_imports WHERE ledger_id = ?", (moved.ledger_id,)).fetchone()[0]
                moved.moved_at = datetime.fromtimestamp(at, timezone.utc).isoformat()
                return moved
            spend = source.store.query(f"SELECT {', '.join(SPEND_COLUMNS)} FROM spend ORDER BY id")
            tx.executemany(INSERT_SPEND, spend)
            moved.rows["spend"] = len(spend)
            for table in ("daily", "callers_daily"):
                rows = source.store.query(f"SELECT scope, name, day, {', '.join(_SUMMED)} FROM {table}")
                added = ", ".join(f"{column} = {table}.{column} + excluded.{column}" for column in _SUMMED)
                tx.executemany(f"INSERT INTO {table} (scope, name, day, {', '.join(_SUMMED)}) VALUES "
                               f"(?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name, day) DO UPDATE SET {added}", rows)
                moved.rows[table] = len(rows)
                if table == "daily":
                    moved.spent_usd = sum(row[3] for row in rows if row[0] == "model")
            for table, columns in _KEPT.items():
                rows = source.store.query(f"SELECT {', '.join(columns)} FROM {table}")
                tx.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
                               "ON CONFLICT DO NOTHING", rows)
                moved.rows[table] = len(rows)
            tx.execute("UPDATE ledger_imports SET spend_rows = ? WHERE ledger_id = ?",
                       (len(spend), moved.ledger_id))
        return moved
    finally:
        source.close()


def store_of(gateway: Gateway | None, config_dir: Path, environ: Mapping[str, str]) -> Store:
    """The shared store the config declares, reached with its DSN (an LlmctlError saying what is missing)."""
    if gateway is None or gateway.store is None:
        raise LlmctlError("gateway.store is not declared: declare the PostgreSQL store to move the ledger into "
                          "(gateway: {store: {env: LLMCTL_STORE_DSN}})")
    if gateway.store.rds is not None:
        raise LlmctlError("gateway.store.rds: the database is created on aws, out of reach from here; set its DSN "
                          f"in {STORE_DSN_ENV} and declare `env: {STORE_DSN_ENV}` for the move")
    spec = store_spec(gateway, config_dir, dsn_from_env=False)
    assert spec is not None
    try:
        return PostgresStore(read_dsn(spec.dsn_env, spec.dsn_file, dict(environ)), pool_size=1)
    except (ValueError, StoreError) as exc:
        raise LlmctlError(f"gateway.store: {exc}") from exc


def sqlite_ledger(run_dir: Path) -> Path:
    """Where the local target's gateway keeps its own ledger."""
    return gateway_dir(run_dir) / LEDGER_FILE


def render_moved(moved: Moved, format: str) -> str:
    if format == "json":
        return json.dumps({**asdict(moved), "already": moved.already}, indent=2)
    if moved.already:
        return f"{moved.source} was moved into {moved.target} on {moved.moved_at}: nothing to do"
    counted = ", ".join(f"{count} {table}" for table, count in moved.rows.items() if count)
    return (f"moved {moved.source} into {moved.target}: ${moved.spent_usd:.4f} of spend ({counted or 'no rows'}); "
            f"point the gateway at the store (llmctl apply) and keep the file as a backup")
