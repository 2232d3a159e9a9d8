"""What a gateway keeps outside its process (ledger, rate-limit windows, cache) and what it does when that is lost.

A gateway alone keeps a SQLite ledger and an in-process rate limiter, as it always has. Replicas sharing a store
(`gateway.store`) keep both in it, and then the store can be lost while they serve:

- `closed` (the default): requests are refused with 503 while the store is known to be down;
- `open`: requests are served, rate-limited per replica and budgeted on the last totals read plus what this
  replica spent since;

and in both, a request that was answered is metered: into the store, or into this replica's spool when the store
does not take it, replayed when it does (`watch`). The store is known to be down from the first failure that says
it is out of reach until a probe, one every RETRY_S in a thread of its own, reaches it again; meanwhile no request
waits on it.
"""
from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime, timezone
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llmctl.gateway.auth import RateLimiter, SharedRateLimiter
from llmctl.gateway.cache import ResponseCache
from llmctl.gateway.errors import GatewayError
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import GatewaySpec, KeySpec
from llmctl.gateway.spend import REFRESH_S, Spending
from llmctl.gateway.spool import Spool
from llmctl.gateway.store import PostgresStore, SQLiteStore, Store, StoreError, read_dsn

log = logging.getLogger("llmctl.gateway")

RETRY_S = 1.0  # how often a lost store is tried again


def open_store(spec: GatewaySpec, environ: Mapping[str, str] = os.environ) -> Store:
    """The ledger's store as `spec` declares it. StoreError when it cannot be reached; ValueError when its DSN is
    not where the spec says."""
    if spec.store is None:
        return SQLiteStore(Path(spec.db_path))
    return PostgresStore(read_dsn(spec.store.dsn_env, spec.store.dsn_file, dict(environ)), spec.store.pool_size)


def unavailable(error: StoreError) -> GatewayError:
    return GatewayError(503, f"the gateway's store is unavailable, so requests are refused (store_failure: closed) "
                        f"until it is back: {error}", "server_error", "store_unavailable",
                        headers={"retry-after": str(max(1, round(RETRY_S)))})


class Stores:
    def __init__(self, spec: GatewaySpec, port: int | None = None) -> None:
        self.ledger = Ledger(open_store(spec))
        self.shared = spec.store is not None
        self.serve_when_lost = spec.store is not None and spec.store.failure == "open"
        self.spool = Spool(Path(spec.spool_dir), port) if spec.store is not None and spec.spool_dir else None
        self.limiter: RateLimiter | SharedRateLimiter = SharedRateLimiter(self.ledger) if self.shared \
            else RateLimiter()
        self._own_limiter = RateLimiter()  # a replica's own windows, while the shared ones cannot be reached
        self._reported: StoreError | None = None
        self.cache: ResponseCache | None = None
        if spec.cache is not None:
            try:
                store = self.ledger.store if self.shared else SQLiteStore(Path(spec.cache.path))
                self.cache = ResponseCache(store, spec.cache.ttl_s, spec.cache.max_entries, own_store=not self.shared)
            except BaseException:
                self.ledger.close()
                raise
        self.spending = self._spending(spec)

    def take(self, spec: GatewaySpec) -> None:
        """A spec reloaded in place: its budgets from now on."""
        self.spending = self._spending(spec)

    def _spending(self, spec: GatewaySpec) -> Spending:
        return Spending(self.ledger, spec.budgets, refresh_s=0.0 if self.shared else REFRESH_S,
                        serve_without_store=self.serve_when_lost)

    @property
    def down(self) -> StoreError | None:
        """Why the store is out of reach, while it is."""
        return self.ledger.store.unreachable

    def lost(self, error: StoreError) -> None:
        if self.down is not None and self._reported is None:
            log.error("the store is lost (store_failure: %s): %s", "open" if self.serve_when_lost else "closed",
                      error)
            self._reported = error

    def refuse_if_down(self) -> None:
        """Closed: no request is served while the store is known to be down."""
        if self.down is not None and not self.serve_when_lost:
            raise unavailable(self.down)

    def admit(self, key: KeySpec) -> int | None:
        """A key's rate-limit admission (None, or the Retry-After)."""
        try:
            return self.limiter.admit(key)
        except StoreError as error:
            self.lost(error)
            if not self.serve_when_lost:
                raise unavailable(error) from error
            return self._own_limiter.admit(key)

    def check_budgets(self, budgets: list[str]) -> None:
        try:
            self.spending.check(budgets)
        except StoreError as error:  # only when closed: open goes on from the last totals
            self.lost(error)
            raise unavailable(error) from error

    def add_tokens(self, key: KeySpec, n: int) -> None:
        try:
            self.limiter.add_tokens(key, n)
        except StoreError as error:
            self.lost(error)
            self._own_limiter.add_tokens(key, n)

    def record(self, **record: Any) -> None:
        """Meter a request: into the store, else (shared) into the spool. Raises StoreError only for a store of
        its own that failed (a SQLite file), where there is no spool."""
        record = {**record, "at": record.get("at") or datetime.now(timezone.utc)}
        try:
            self.ledger.record(**record)
        except StoreError as error:
            if self.spool is None:
                raise
            self.lost(error)
            self.spool.add(record)

    async def watch(self) -> None:
        """Until cancelled: while the store is down, try it every RETRY_S; once it answers, replay the spool."""
        if self.spool is None:
            return
        while True:
            if self.down is not None or self.spool.pending():
                await asyncio.to_thread(self._catch_up)
            await asyncio.sleep(RETRY_S)

    def _catch_up(self) -> None:
        assert self.spool is not None
        if self.down is not None and not self.ledger.store.probe():
            return
        try:
            replayed = self.spool.replay(self.ledger)
        except StoreError as error:
            self.lost(error)
            return
        if self._reported is not None:
            log.warning("the store is back: %s; %d spooled records replayed", self.ledger.where, replayed)
            self._reported = None

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        self.ledger.close()
