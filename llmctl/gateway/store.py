"""Where a gateway keeps what it meters: a SQLite file of its own, or a PostgreSQL database its replicas share.

Both run the same statements. They are written once, in the SQL both dialects accept (`ON CONFLICT` upserts,
`?` placeholders that become psycopg's `%s`); only the tables' definitions differ, and those are versioned
migrations per component (the ledger, the cache), applied when a gateway opens its store. A gateway refuses a store
whose schema is newer than the migrations it knows: an older release must not write into tables it does not
understand.

Every failure of the store reaches callers as StoreError, so the gateway decides what a lost store means in one
place (`store_failure`). A failure that says the store is out of reach marks it `unreachable`: from then on calls
fail at once, without waiting on a connection attempt, until `probe` (which the gateway runs off its event loop)
reaches it again.
"""
from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

import filelock

Dialect = Literal["sqlite", "postgres"]

# Writes are a few rows each, so a waiting writer gets the lock within milliseconds; the timeout is only the point
# at which something is wrong (a process holding a transaction open), not a wait anyone should see.
BUSY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 3


class StoreError(Exception):
    """The store could not be reached, or did not take a statement."""


class Duplicate(StoreError):
    """A row whose identity the store already holds (a unique key): the transaction was rolled back."""


class SchemaTooNew(Exception):
    """The store was migrated by a newer llmctl than this one."""


@dataclass(frozen=True)
class Migration:
    sqlite: str
    postgres: str


class Cursor(Protocol):
    rowcount: int
    description: Any  # None for a statement that returns no rows

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None: ...


def redacted(dsn: str) -> str:
    """A DSN fit for a message, in either of libpq's forms (a URL, or key=value words): who, where and which
    database, never a password or other option."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - psycopg raises its ProgrammingError; nothing of the text may be shown
        return "(a DSN that cannot be parsed)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or 'localhost'}{port}/{parts.get('dbname') or ''}"


def _rows(cursor: Cursor) -> list[Any]:
    return cursor.fetchall() if cursor.description is not None else []


@lru_cache(maxsize=256)
def _postgres_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class Store(ABC):
    dialect: Dialect
    where: str  # what messages call it: a path, or the DSN without its password

    def __init__(self) -> None:
        self.unreachable: StoreError | None = None  # why, while the store is out of reach

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        self._available()
        try:
            with self._transaction() as tx:
                yield tx
        except self._errors as exc:
            raise self._failed(exc) from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """One statement on its own (a read, or a write that needs no transaction around it)."""
        self._available()
        try:
            return self._query(sql, params)
        except self._errors as exc:
            raise self._failed(exc) from exc

    def migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        """Bring `component`'s tables to the newest of `migrations`; the version they are at."""
        try:
            return self._migrate(component, migrations)
        except self._errors as exc:
            raise self._failed(exc) from exc

    def probe(self) -> bool:
        """Whether the store answers now (tried even while it is marked unreachable, which an answer clears). It
        may wait for a connection: call it off the event loop."""
        try:
            with self._transaction() as tx:
                tx.execute("SELECT 1")
        except self._errors as exc:
            self._failed(exc)
            return False
        self.unreachable = None
        return True

    def _available(self) -> None:
        if self.unreachable is not None:
            raise self.unreachable

    def _failed(self, exc: Exception) -> StoreError:
        kind = Duplicate if isinstance(exc, self._duplicate) else StoreError
        error = kind(f"the store {self.where}: {str(exc).strip() or type(exc).__name__}")
        if self._lost(exc):
            self.unreachable = error
        return error

    _errors: tuple[type[Exception], ...] = ()
    _duplicate: tuple[type[Exception], ...] = ()

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Transaction]: ...

    @abstractmethod
    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One statement outside any transaction (committed by itself), and its rows."""

    @abstractmethod
    def _migrate(self, component: str, migrations: Sequence[Migration]) -> int: ...

    @abstractmethod
    def _lost(self, exc: Exception) -> bool:
        """Whether `exc` says the store is out of reach (rather than that one statement failed)."""

    @abstractmethod
    def close(self) -> None: ...


_VERSIONS = """CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
)"""


def _check_version(component: str, current: int, known: int, where: str) -> None:
    if current > known:
        raise SchemaTooNew(f"the store {where} holds {component} schema version {current}, newer than the {known} "
                           f"this llmctl knows: upgrade llmctl on this gateway, or point it at another store")


class SQLiteStore(Store):
    dialect: Dialect = "sqlite"
    _errors = (sqlite3.Error,)
    _duplicate = (sqlite3.IntegrityError,)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self.where = path, str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), not opened behind our back.
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            # Switching a new file to WAL fails at once with 'database is locked' when another process is opening
            # it too (SQLite skips the busy handler there), so the setup is serialised by a file lock instead.
            with self._setup_lock():
                self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: no fsync per commit; a power cut may lose the last commits, never corrupt it.
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"the store {path}: {exc}") from exc

    def _setup_lock(self) -> filelock.FileLock:
        return filelock.FileLock(f"{self.path}.lock", timeout=BUSY_TIMEOUT_S)

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        # IMMEDIATE takes the write lock up front: a deferred transaction that reads and then writes can fail with
        # SQLITE_BUSY when another process committed meanwhile, and the busy timeout does not retry that case.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db  # type: ignore[misc]  # sqlite3.Connection has execute/executemany with these shapes
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        # A read needs no write lock: in WAL mode it sees the last commit without waiting for a writer.
        return _rows(self._db.execute(sql, params))

    def _migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        # executescript commits first, so a migration cannot sit in one transaction with its version row; the file
        # lock serialises gateways starting together, and every migration is written to be run twice safely.
        with self._setup_lock():
            self._db.execute(_VERSIONS)
            row = self._db.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
            current = row[0] if row else 0
            _check_version(component, current, len(migrations), self.where)
            for version in range(current + 1, len(migrations) + 1):
                self._db.executescript(migrations[version - 1].sqlite)
                self._db.execute("INSERT INTO schema_versions VALUES (?, ?) ON CONFLICT (component) DO UPDATE "
                                 "SET version = excluded.version", (component, version))
        return len(migrations)

    def _lost(self, exc: Exception) -> bool:
        return False  # a local file: a failure is about the statement (a full disk, a lock), not reachability

    def close(self) -> None:
        self._db.close()


class PostgresStore(Store):
    """A psycopg 3 connection pool. The gateway calls it from its event loop's thread, one statement at a time, so
    a request holds one connection only for as long as its statements run."""

    dialect: Dialect = "postgres"

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        super().__init__()
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        self._errors = (psycopg.Error, PoolTimeout)
        self._duplicate = (psycopg.errors.UniqueViolation,)
        self._operational = (psycopg.OperationalError, PoolTimeout)
        self.where = redacted(dsn)
        # Connect once outside the pool: a pool only says it timed out, and the person starting the gateway needs
        # the server's reason (refused, no such database, password failed).
        try:
            psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S).close()
        except psycopg.Error as exc:
            raise StoreError(f"the store {self.where} is unreachable: {str(exc).strip()}") from exc
        self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, timeout=CONNECT_TIMEOUT_S, open=False,
                                    # autocommit: a statement alone is one round trip (no BEGIN and COMMIT
                                    # around it); a transaction says so, below.
                                    kwargs={"connect_timeout": CONNECT_TIMEOUT_S, "autocommit": True},
                                    name="llmctl-store")
        self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        # Pipeline mode: statements are sent without waiting for each answer, until one is read (a fetch, a
        # rowcount) or the transaction ends, so a transaction of several writes costs one or two round trips, not
        # one per statement. Committed on a clean exit, else rolled back.
        with self._pool.connection() as conn, conn.pipeline() as pipeline, conn.transaction():
            yield _PostgresTransaction(conn, pipeline)

    @contextmanager
    def _script_transaction(self) -> Iterator[Transaction]:
        # Outside pipeline mode, whose extended protocol takes one statement at a time: a migration is a script.
        with self._pool.connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._pool.connection() as conn:  # autocommit: one round trip
            return _rows(_PostgresTransaction(conn).execute(sql, params))

    def _migrate(self, component: str, migrations: Sequence[Migration]) -> int:
        with self._script_transaction() as tx:
            # One migrating gateway at a time; the others wait here and then find nothing left to do.
            tx.execute("SELECT pg_advisory_xact_lock(?)", (0x6C6C6D63,))
            tx.execute(_VERSIONS)
            row = tx.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
            current = row[0] if row else 0
            _check_version(component, current, len(migrations), self.where)
            for version in range(current + 1, len(migrations) + 1):
                script = migrations[version - 1].postgres
                if script.strip():
                    tx.execute(script)
                tx.execute("INSERT INTO schema_versions VALUES (?, ?) ON CONFLICT (component) DO UPDATE "
                           "SET version = excluded.version", (component, version))
        return len(migrations)

    def _lost(self, exc: Exception) -> bool:
        return isinstance(exc, self._operational)

    def close(self) -> None:
        self._pool.close()


class _PostgresTransaction:
    def __init__(self, conn: Any, pipeline: Any = None) -> None:
        self._conn = conn
        self._pipeline = pipeline

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        # A script of several statements runs only without parameters, and then unconverted (it holds no `?`).
        cursor = self._conn.execute(_postgres_sql(sql), params) if params else self._conn.execute(sql)
        return cursor if self._pipeline is None else _Piped(cursor, self._pipeline)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(_postgres_sql(sql), params)


class _Piped:
    """A statement's cursor in pipeline mode, where its answer has not necessarily arrived: reading one waits."""

    def __init__(self, cursor: Any, pipeline: Any) -> None:
        self._cursor, self._pipeline = cursor, pipeline

    @property
    def rowcount(self) -> int:
        self._pipeline.sync()  # rowcount, unlike a fetch, does not wait for the answer by itself
        return int(self._cursor.rowcount)

    @property
    def description(self) -> Any:
        self._pipeline.sync()
        return self._cursor.description

    def fetchone(self) -> Any:
        return self._cursor.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._cursor.fetchall())


def read_dsn(dsn_env: str | None, dsn_file: str | None, environ: dict[str, str]) -> str:
    """The DSN a gateway spec names, by variable or by file; ValueError saying which is missing."""
    if dsn_env is not None:
        value = environ.get(dsn_env, "").strip()
        if not value:
            raise ValueError(f"the store's DSN is read from the environment variable {dsn_env}, which is not set")
        return value
    assert dsn_file is not None
    try:
        value = Path(dsn_file).read_text().strip()
    except OSError as exc:
        raise ValueError(f"the store's DSN file {dsn_file} cannot be read: {exc.strerror}") from exc
    if not value:
        raise ValueError(f"the store's DSN file {dsn_file} is empty")
    return value
