"""Gateways sharing one PostgreSQL store: one budget and one rate limit across them, nothing metered lost or
counted twice when a gateway or the store goes away. Real gateway processes, a real PostgreSQL server (stopped and
started by the tests), and the recording upstream double for the models."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from gateway.test_app import gateway_spec, route
from gateway.upstream import GatewayUrl, RecordingUpstream, eventually, gateway_process
from llmctl.gateway.auth import hash_key
from llmctl.gateway.spec import BudgetSpec, GatewaySpec, KeySpec, Price, StoreSpec
from postgres_server import PostgresServer

pytestmark = pytest.mark.timeout(180)  # a hang guard only

DSN_ENV = "LLMCTL_TEST_STORE_DSN"
KEY = "shared-store-test-key"
# 11 input tokens at $10,000 per million: $0.11 a request (the double's usage), and nothing for output.
PRICE = Price(usd_per_1m_input=10_000, usd_per_1m_output=0, basis="test")
COST = 0.11


def _spec(tmp_path: Path, upstream: str, failure: str = "closed", limit_usd: float = 1.0,
          requests_per_minute: int | None = None) -> GatewaySpec:
    return gateway_spec(
        tmp_path, route("assistant", [upstream], price=PRICE, budgets=["team"]),
        keys=[KeySpec(id="app", sha256=hash_key(KEY), requests_per_minute=requests_per_minute)],
        budgets={"team": BudgetSpec(name="team", limit_usd=limit_usd, period="month", on_exceed="block")},
        store=StoreSpec(dsn_env=DSN_ENV, failure=failure), spool_dir=str(tmp_path / "spool"))


@contextmanager
def _gateways(spec: GatewaySpec, tmp_path: Path, postgres: PostgresServer, n: int = 2) -> Iterator[list[GatewayUrl]]:
    with ExitStack() as stack:
        urls = [stack.enter_context(gateway_process(spec, tmp_path / f"spec-{i}.json", env={DSN_ENV: postgres.dsn}))
                for i in range(n)]
        for url in urls:  # started: it has opened its store (it listens a moment before)
            httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).raise_for_status()
        yield urls


def _ask(url: str, stream: bool = False) -> httpx.Response:
    return httpx.post(f"{url}/chat/completions", headers={"authorization": f"Bearer {KEY}"}, timeout=30,
                      json={"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], "stream": stream})


def _metered(postgres: PostgresServer) -> tuple[int, float]:
    """Requests and dollars the store holds against the model."""
    with psycopg.connect(postgres.dsn) as conn:
        row = conn.execute("SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(usd), 0) FROM daily "
                           "WHERE scope = 'model'").fetchone()
    assert row is not None
    return int(row[0]), float(row[1])


def test_two_gateways_spend_one_budget_and_both_refuse_once_it_is_gone(tmp_path: Path,
                                                                       postgres: PostgresServer) -> None:
    with RecordingUpstream() as upstream, _gateways(_spec(tmp_path, upstream.base_url), tmp_path, postgres) as urls:
        answered = 0
        for number in range(14):
            response = _ask(urls[number % 2])
            if response.status_code != 200:
                break
            answered += 1
            # Each answer metered before the next is asked: the test is about the shared total, not a race.
            assert eventually(lambda: _metered(postgres)[0] == answered)
        # $0.11 a request: the 10th is admitted at $0.99 and the 11th at $1.10 is not, on either gateway.
        assert answered == 10
        refusals = [_ask(url) for url in urls]
        assert [r.status_code for r in refusals] == [429, 429]
        assert all(r.json()["error"]["code"] == "budget_exceeded" for r in refusals)
    assert _metered(postgres) == (10, pytest.approx(10 * COST))


def test_a_key_limited_to_ten_a_minute_gets_ten_across_two_gateways(tmp_path: Path, postgres: PostgresServer) -> None:
    spec = _spec(tmp_path, "", limit_usd=1000, requests_per_minute=10)
    with RecordingUpstream() as upstream:
        spec.routes["assistant"].upstreams = [upstream.base_url]
        with _gateways(spec, tmp_path, postgres) as urls:
            statuses = [_ask(urls[number % 2]).status_code for number in range(20)]
    assert statuses.count(200) == 10 and statuses.count(429) == 10
    assert statuses[:10] == [200] * 10  # the first ten, whichever gateway took them


def test_concurrent_clients_on_two_gateways_overrun_the_budget_by_at_most_what_was_in_flight(
        tmp_path: Path, postgres: PostgresServer) -> None:
    clients = 8
    with RecordingUpstream(itl_s=0.01) as upstream, \
            _gateways(_spec(tmp_path, upstream.base_url), tmp_path, postgres) as urls:
        def client(number: int) -> None:
            while _ask(urls[number % 2], stream=True).status_code == 200:
                pass

        threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        requests, spent = _metered(postgres)
    # Admitted only while the total was under $1; once it was, at most the other clients' requests were still
    # under way, each costing one request's price.
    assert spent >= 1.0
    assert spent < 1.0 + clients * COST
    assert requests == round(spent / COST)


def test_a_gateway_killed_loses_no_metered_spend_and_counts_nothing_twice(tmp_path: Path,
                                                                          postgres: PostgresServer) -> None:
    with RecordingUpstream(itl_s=0.2, deltas=[f"w{i} " for i in range(20)]) as upstream, \
            _gateways(_spec(tmp_path, upstream.base_url, limit_usd=100), tmp_path, postgres) as (first, second):
        for url in (first, second, first, second):
            assert _ask(url).status_code == 200
        assert eventually(lambda: _metered(postgres)[0] == 4)
        # A stream under way on the first gateway when it is killed: its client gets no whole answer.
        cut: list[Exception] = []

        def stream() -> None:
            try:
                _ask(first, stream=True)
            except httpx.HTTPError as error:
                cut.append(error)

        reader = threading.Thread(target=stream)
        reader.start()
        assert eventually(lambda: len(upstream.bodies) == 5)
        os.kill(first.pid, signal.SIGKILL)
        reader.join(30)
        assert cut, "the stream should have been cut by the kill"
        # The other gateway goes on from the same total.
        assert _ask(second).status_code == 200
        assert eventually(lambda: _metered(postgres)[0] == 5)
    assert _metered(postgres) == (5, pytest.approx(5 * COST))


def test_a_gateway_whose_store_is_unreachable_refuses_to_start_and_says_why(tmp_path: Path,
                                                                            postgres: PostgresServer) -> None:
    spec = _spec(tmp_path, "http://127.0.0.1:9/v1")
    spec.write(tmp_path / "spec.json")
    postgres.stop()
    done = subprocess.run([sys.executable, "-m", "llmctl.gateway", "--spec", str(tmp_path / "spec.json"), "--port",
                           "0"], capture_output=True, text=True, timeout=60, env={**os.environ, DSN_ENV: postgres.dsn})
    assert done.returncode == 1
    assert done.stdout == ""  # it never listened
    assert "not starting: the store postgresql://llmctl@127.0.0.1" in done.stderr
    assert "is unreachable" in done.stderr and "refused" in done.stderr.lower()
    assert "Traceback" not in done.stderr


def test_a_gateway_without_its_dsn_variable_says_which_variable(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "http://127.0.0.1:9/v1")
    spec.write(tmp_path / "spec.json")
    env = {name: value for name, value in os.environ.items() if name != DSN_ENV}
    done = subprocess.run([sys.executable, "-m", "llmctl.gateway", "--spec", str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2
    assert f"environment variable {DSN_ENV}, which is not set" in done.stderr


def _spooled(tmp_path: Path) -> int:
    return sum(len(path.read_text().splitlines()) for path in (tmp_path / "spool").glob("spool-*.jsonl"))


def test_closed_refuses_while_the_store_is_lost_and_serves_again_when_it_returns(tmp_path: Path,
                                                                                postgres: PostgresServer) -> None:
    with RecordingUpstream() as upstream, \
            _gateways(_spec(tmp_path, upstream.base_url), tmp_path, postgres, n=1) as (url,):
        assert _ask(url).status_code == 200
        assert eventually(lambda: _metered(postgres)[0] == 1)
        postgres.stop()
        refused = _ask(url)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert _ask(url).status_code == 503  # known down now: refused without trying the store
        postgres.start()
        assert eventually(lambda: _ask(url).status_code == 200, timeout_s=30)
        assert eventually(lambda: _metered(postgres)[0] == 2)


def test_open_serves_while_the_store_is_lost_and_replays_every_request_once_it_returns(
        tmp_path: Path, postgres: PostgresServer) -> None:
    with RecordingUpstream() as upstream, \
            _gateways(_spec(tmp_path, upstream.base_url, failure="open"), tmp_path, postgres, n=1) as (url,):
        assert _ask(url).status_code == 200
        assert eventually(lambda: _metered(postgres)[0] == 1)
        postgres.stop()
        assert [_ask(url).status_code for _ in range(3)] == [200, 200, 200]
        assert eventually(lambda: _spooled(tmp_path) == 3)  # on this gateway's disk until the store is back
        postgres.start()
        assert eventually(lambda: _spooled(tmp_path) == 0, timeout_s=30)
        assert _metered(postgres) == (4, pytest.approx(4 * COST))


def test_a_spool_left_by_a_killed_gateway_is_replayed_by_the_next_one_once(tmp_path: Path,
                                                                           postgres: PostgresServer) -> None:
    with RecordingUpstream() as upstream:
        spec = _spec(tmp_path, upstream.base_url, failure="open")
        with _gateways(spec, tmp_path, postgres, n=1) as (url,):
            postgres.stop()
            assert _ask(url).status_code == 200
            assert eventually(lambda: _spooled(tmp_path) == 1)
            os.kill(url.pid, signal.SIGKILL)
        postgres.start()
        # The next gateway on the same spool directory finds the file and replays it.
        with _gateways(spec, tmp_path, postgres, n=1):
            assert eventually(lambda: _spooled(tmp_path) == 0, timeout_s=30)
    assert _metered(postgres) == (1, pytest.approx(COST))


def test_a_gateway_refuses_a_store_migrated_by_a_newer_llmctl(tmp_path: Path, postgres: PostgresServer) -> None:
    spec = _spec(tmp_path, "http://127.0.0.1:9/v1")
    spec.write(tmp_path / "spec.json")
    with psycopg.connect(postgres.dsn) as conn:
        conn.execute("CREATE TABLE schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_versions VALUES ('ledger', 7)")
    done = subprocess.run([sys.executable, "-m", "llmctl.gateway", "--spec", str(tmp_path / "spec.json")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, DSN_ENV: postgres.dsn})
    assert done.returncode == 1
    assert "ledger schema version 7, newer than the 2 this llmctl knows: upgrade llmctl" in done.stderr
