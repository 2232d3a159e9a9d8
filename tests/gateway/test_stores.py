"""The parts of a shared store beyond spend: a cache and token windows every replica sees, and the spool that keeps
metering through an outage. Against a real PostgreSQL server."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from gateway.test_app import gateway_spec, route
from gateway.upstream import RecordingUpstream, running_gateway
from llmctl.gateway.auth import SharedRateLimiter
from llmctl.gateway.metering import Answered, Ledger
from llmctl.gateway.spec import CacheSpec, KeySpec, StoreSpec
from llmctl.gateway.spool import Spool
from llmctl.gateway.store import PostgresStore, StoreError
from postgres_server import PostgresServer

DSN_ENV = "LLMCTL_TEST_STORE_DSN"
AT = datetime(2026, 12, 3, 10, 0, tzinfo=timezone.utc)


def _record(request_id: str) -> dict:
    return {"model": "assistant", "key_id": "k", "budgets": ["team"], "input_tokens": 10, "output_tokens": 5,
            "usd": 0.5, "at": AT, "request_id": request_id, "team": None, "forget_before": None,
            "answered": Answered(request_id, "cmpl-1", "assistant", "stable", None, "k")}


def test_an_answer_cached_by_one_gateway_is_replayed_by_the_other(tmp_path: Path, postgres: PostgresServer,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DSN_ENV, postgres.dsn)
    deterministic = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    with RecordingUpstream() as upstream:
        specs = [gateway_spec(tmp_path / name, route("assistant", [upstream.base_url]),
                              cache=CacheSpec(path=str(tmp_path / name / "cache.sqlite"), ttl_s=3600, max_entries=10),
                              store=StoreSpec(dsn_env=DSN_ENV), spool_dir=str(tmp_path / name / "spool"))
                 for name in ("a", "b")]
        with running_gateway(specs[0]) as first, running_gateway(specs[1]) as second:
            stored = httpx.post(f"{first}/chat/completions", json=deterministic, timeout=30)
            replayed = httpx.post(f"{second}/chat/completions", json=deterministic, timeout=30)
    assert (stored.headers["x-llmctl-cache"], replayed.headers["x-llmctl-cache"]) == ("miss", "hit")
    assert len(upstream.bodies) == 1  # the second gateway never asked the model
    assert not (tmp_path / "a" / "cache.sqlite").exists()  # the cache lives in the store, not beside the gateway


def test_tokens_per_minute_is_one_window_across_replicas(postgres: PostgresServer) -> None:
    key = KeySpec(id="batch", sha256="0" * 64, tokens_per_minute=100)
    ledgers = [Ledger(PostgresStore(postgres.dsn)) for _ in range(2)]
    try:
        first, second = (SharedRateLimiter(ledger, clock=lambda: 1000.0) for ledger in ledgers)
        assert first.admit(key) is None
        first.add_tokens(key, 60)
        assert second.admit(key) is None  # 60 of 100 used, on the other replica
        second.add_tokens(key, 50)
        # 110 in the window: refused until the first 60 leave it, counted until their second has wholly left, 1061
        assert first.admit(key) == 61
        assert second.admit(key, now=1061.0) is None
    finally:
        for ledger in ledgers:
            ledger.close()


def test_a_spool_replays_each_record_once_in_its_own_day_and_skips_a_line_cut_short(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    spool = Spool(tmp_path / "spool", port=8080)
    spool.add(_record("req-1"))
    spool.add(_record("req-2"))
    with spool.path.open("a") as out:
        out.write('{"model": "assistant", "key_id"')  # a crash while this line was written
    ledger.record(**_record("req-1"))  # the store took this one before it was lost: not counted twice
    assert spool.pending()
    assert spool.replay(ledger) == 1
    assert not spool.pending() and spool.path.read_text() == ""
    usage = ledger.usage(AT)
    assert usage["models"]["assistant"]["requests"] == 2
    assert usage["models"]["assistant"]["spent_usd"] == 1.0  # in the day it was spent, not the day it was replayed
    assert ledger.answered("req-2", "k", 0) is not None  # still there to be rated


def test_a_spool_record_is_one_json_line_without_a_secret_or_a_prompt(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", port=8080)
    spool.add(_record("req-1"))
    line = json.loads(spool.path.read_text())
    assert line["request_id"] == "req-1" and line["at"] == AT.isoformat()
    assert set(line) == set(_record("req-1"))


@pytest.mark.parametrize("dsn", ["postgresql://llmctl:s3cret-pw@127.0.0.1:1/llmctl",
                                 "host=127.0.0.1 port=1 user=llmctl password=s3cret-pw dbname=llmctl"])
def test_a_store_that_cannot_be_reached_is_named_without_its_password(dsn: str) -> None:
    with pytest.raises(StoreError) as raised:
        PostgresStore(dsn)
    assert "postgresql://llmctl@127.0.0.1:1/llmctl is unreachable" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
