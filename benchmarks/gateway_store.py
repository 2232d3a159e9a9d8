#!/usr/bin/env python
"""What the shared store (PostgreSQL) costs the gateway against its own SQLite ledger, whether two gateways on one
store serve twice what one does, and by how much gateways racing on one budget overrun it (issue 16).

    python benchmarks/gateway_store.py           # the full run, about 3.5 minutes on 2 cores
    python benchmarks/gateway_store.py --quick   # a smoke check, about 1 minute
    python benchmarks/gateway_store.py --keep    # leave the specs, logs and SQLite ledger it wrote

It needs PostgreSQL's server binaries (scripts/install-postgres) and llmctl with psycopg. A real PostgreSQL is started
in a temporary directory by the tests' own `tests/postgres_server.py` (on sys.path through benchmarks/support.py,
which puts the repository's tests/ there): initdb, pg_ctl, a trusted local user, and `fsync=off`, as the tests run it.

Every gateway is a `python -m llmctl.gateway` process with the same spec but for its store: a SQLite ledger of its
own (`db_path`, in-process rate limits, budget totals cached for 1 s) or the PostgreSQL store (`store`, budgets read
from it on every request, the rate-limit windows in it). The spec: priced routes counting against blocking budgets,
and keys with and without a per-minute limit (large, so it never refuses). The upstream is the scripted double of
benchmarks/gateway_overhead.py answering whole and at once (two processes of it, so that it is not the bottleneck),
and a second double in each process answering after SLOW_S for the budget race.

1. Latency, one request at a time: direct to the upstream, through the SQLite gateway and through the PostgreSQL
   gateway, with the rate-limited key and with the key without limits; interleaved in rounds (every target in turn,
   the order rotating each round), timed on the client. Then each store call a request makes, timed in this process
   through llmctl's Ledger and SharedRateLimiter on both stores, with one plain round trip to PostgreSQL and one
   admission against the shared rate window as the key's last minute fills.
2. Throughput with 16 clients: the SQLite gateway, one PostgreSQL gateway, and two PostgreSQL gateways on the same
   store (the clients split over them), each with the key without limits and with a rate-limited key of its own;
   interleaved in rounds of a fixed duration. CPU time of every process is read from /proc around each phase.
3. The budget race: a $1 budget, $0.01 a request (the double reports 40 input tokens), two gateways with 16 clients
   each asking until refused; the spend the store holds, its overrun over $1, against the bound (the requests that
   can be in flight: clients x $0.01). Repeated, with the upstream answering at once and after SLOW_S.

The load generator, its connections and the interleaved rounds are gateway_overhead.py's (imported). Figures are
printed, never asserted: the script exits 0 unless something breaks, and stops every process it starts, PostgreSQL
included, also on Ctrl-C, SIGTERM or an error. benchmarks/README.md explains the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import psutil
import psycopg

from support import Proc, launch, say, version  # first: it puts tests/ on the path

from gateway_overhead import (KEY, Connection, Load, Result, Scenario, ScriptedUpstream, Target, address, cpu_model,
                              ms, plus, rows, start_gateway)
from postgres_server import PostgresServer

from llmctl.gateway.auth import SharedRateLimiter, hash_key
from llmctl.gateway.metering import Answered, Ledger
from llmctl.gateway.spec import BudgetSpec, GatewaySpec, KeySpec, Price, RouteSpec, StoreSpec
from llmctl.gateway.store import PostgresStore, SQLiteStore
from llmctl.verify.stats import percentile

GOAL_ADDED_P50_MS, GOAL_RATIO = 1.0, 1.8  # the goals: PostgreSQL over SQLite; two gateways over one

T = TypeVar("T")
DSN_ENV = "LLMCTL_BENCH_STORE_DSN"
INPUT_TOKENS = 40  # the double's usage.prompt_tokens (gateway_overhead.ScriptedUpstream)
COST_USD = 0.01  # a request's price: input only
PRICE = Price(usd_per_1m_input=COST_USD / INPUT_TOKENS * 1_000_000, usd_per_1m_output=0.0,
              basis="benchmark: $0.01 a request")
RACE_LIMIT_USD = 1.0
RACE_CLIENTS = 16  # per gateway
SLOW_S = 0.05  # the slow double's answer time, for the race
THROUGHPUT_CLIENTS = 16
WINDOW_ROWS = (0, 1000, 4000, 16000)  # the shared rate window's rows for the admission timing

# The keys: the rate-limited one the latency scenario uses, one without limits, and a rate-limited one per
# throughput target (a key's window holds its own last minute only).
KEYS = {"paced": KEY, "budget-only": f"{KEY}-budget-only", "rpm-one": f"{KEY}-rpm-one", "rpm-two": f"{KEY}-rpm-two"}
RATE_LIMITED = {"paced", "rpm-one", "rpm-two"}


def bearer(key: str) -> bytes:
    return f"authorization: Bearer {KEYS[key]}\r\n".encode()


# --- the processes ---------------------------------------------------------------------------------------------------


def serve_upstream() -> int:
    """An upstream process: one double answering whole at once, one after SLOW_S; prints their URLs, serves until
    killed."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])  # for sigwait; threads inherit it
    with ScriptedUpstream(ttft_s=0.0, itl_s=0.0, whole=True) as fast, \
            ScriptedUpstream(ttft_s=SLOW_S, itl_s=0.0, whole=True) as slow:
        print(json.dumps({"fast": fast.base_url, "slow": slow.base_url}), flush=True)
        signal.sigwait([signal.SIGTERM, signal.SIGINT])
    return 0


def start_upstream(name: str, log: Path, processes: list[Proc]) -> dict[str, str]:
    """Start an upstream process (into `processes` at once, so it is stopped whatever happens next); its URLs."""
    proc = launch(name, [sys.executable, __file__, "--serve-upstream"], log, pipe_stdout=True)
    processes.append(proc)
    first = proc.popen.stdout.readline() if proc.popen.stdout is not None else ""
    if first:
        urls: dict[str, str] = json.loads(first)
        return urls
    raise RuntimeError(f"{name} did not start: {proc.tail()}")


def spec(scratch: Path, name: str, fast: list[str], slow: list[str], shared: bool) -> GatewaySpec:
    """Priced routes counting against blocking budgets: `bench` against one never reached, `race` and `race-slow`
    against $1; keys with a per-minute limit that never bites and one without; the store, or a SQLite file."""
    def route(model: str, upstreams: list[str], budget: str) -> RouteSpec:
        return RouteSpec(model=model, kind="replicas", upstreams=upstreams, upstream_model="scripted", price=PRICE,
                         budgets=[budget])

    return GatewaySpec(
        routes={"bench": route("bench", fast, "team-monthly"), "race": route("race", fast, "race"),
                "race-slow": route("race-slow", slow, "race")},
        keys=[KeySpec(id=key_id, sha256=hash_key(secret),
                      requests_per_minute=10**7 if key_id in RATE_LIMITED else None)
              for key_id, secret in KEYS.items()],
        budgets={"team-monthly": BudgetSpec(name="team-monthly", limit_usd=1e9, period="month", on_exceed="block"),
                 "race": BudgetSpec(name="race", limit_usd=RACE_LIMIT_USD, period="month", on_exceed="block")},
        db_path=str(scratch / f"{name}-ledger.sqlite"), audit_path=str(scratch / f"{name}-audit.jsonl"),
        store=StoreSpec(dsn_env=DSN_ENV, failure="closed") if shared else None,
        spool_dir=str(scratch / f"{name}-spool") if shared else None)


# --- CPU time, from /proc --------------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def postgres_cpu_s(server: PostgresServer) -> float:
    """The postmaster's CPU seconds with its children's, exited (waited for) and live (the backends)."""
    postmaster = psutil.Process(int((server.data / "postmaster.pid").read_text().split()[0]))
    user, system, children_user, children_system = postmaster.cpu_times()[:4]
    total = user + system + children_user + children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):  # a backend that has just exited
            total += sum(child.cpu_times()[:2])
    return total


def machine_s() -> dict[str, float]:
    """CPU seconds of the whole machine, over all its CPUs: busy (user, system, interrupts), of which interrupts,
    and stolen by the hypervisor."""
    user, nice, system, _, _, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return {"machine": (user + nice + system + irq + softirq) / TICK, "interrupts": (irq + softirq) / TICK,
            "steal": steal / TICK}


@dataclass
class Meters:
    gateways: list[Proc]
    upstreams: list[Proc]
    postgres: PostgresServer

    def read(self) -> dict[str, float]:
        return {"gateways": sum(p.cpu_s() for p in self.gateways), "PostgreSQL": postgres_cpu_s(self.postgres),
                "upstreams": sum(p.cpu_s() for p in self.upstreams), "load generator": time.process_time(),
                **machine_s(), "wall": time.monotonic()}


class MeteredLoad(Load):
    """gateway_overhead's load, with every process's CPU time summed per target over the timed phases of a
    scenario run for a duration (phases of a few hundred ms would mostly measure /proc's own reading)."""

    def __init__(self, prompts: list[list[dict[str, str]]], meters: Meters) -> None:
        super().__init__(prompts)
        self.meters = meters
        self.cpu: dict[tuple[str, str], dict[str, float]] = {}
        self.window_rows: dict[tuple[str, str], list[int]] = {}
        self.count_rows: dict[str, str] = {}  # target -> the key whose shared window to count after each phase
        self.spread: dict[str, int] = {}  # target -> how many processes serve it
        self.rates: dict[tuple[str, str], list[float]] = {}  # completed requests/s of each round's phase

    async def phase(self, target: Target, scenario: Scenario, result: Result) -> None:
        if scenario.title == "warm-up" or not scenario.duration_s:
            await super().phase(target, scenario, result)
            return
        self.spread[target.name] = len(target.addresses[scenario.model])
        before, done, elapsed = self.meters.read(), len(result.ok), result.elapsed_s
        await super().phase(target, scenario, result)
        after = self.meters.read()
        if result.elapsed_s > elapsed:
            self.rates.setdefault((scenario.title, target.name), []).append(
                (len(result.ok) - done) / (result.elapsed_s - elapsed))
        spent = self.cpu.setdefault((scenario.title, target.name), {})
        for name, value in after.items():
            spent[name] = spent.get(name, 0.0) + value - before[name]
        if target.name in self.count_rows:
            self.window_rows.setdefault((scenario.title, target.name), []).append(
                window_rows(self.meters.postgres, self.count_rows[target.name]))


# --- the store, read and reset between measurements ------------------------------------------------------------------


def store_query(server: PostgresServer, sql: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description is not None else []


def window_rows(server: PostgresServer, key_id: str) -> int:
    """The requests in `key_id`'s shared window (the last 60 s), which an admission reads as at most 61 buckets."""
    return int(store_query(server, "SELECT COALESCE(SUM(requests), 0) FROM rate_buckets WHERE key_id = %s AND "
                           "second + 1 > %s", (key_id, time.time() - 60))[0][0])


def timed(call: Callable[[], object], n: int) -> tuple[float, float]:
    """p50 and p99 ms of `n` calls."""
    times = []
    for _ in range(n):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return percentile(times, 50) * 1000, percentile(times, 99) * 1000


def fsync_ms(directory: Path, n: int = 50) -> float:
    """The median ms of an 8 KiB append + fdatasync in `directory`: what a durable commit waits for here."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        return timed(lambda: (os.write(fd, bytes(8192)), os.fdatasync(fd)), n)[0]
    finally:
        os.close(fd)
        path.unlink()


def store_costs(server: PostgresServer, scratch: Path, n: int) -> dict[str, dict[str, tuple[float, float]]]:
    """What each store call a request makes costs, through llmctl's own Ledger and SharedRateLimiter in this
    process: on a SQLite ledger and on the benchmark's PostgreSQL (a pool of one connection: the gateway uses one at
    a time). For PostgreSQL also one admission against a key's shared window holding each of WINDOW_ROWS requests."""
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for kind in ("SQLite", "PostgreSQL"):
        store = SQLiteStore(scratch / "calls.sqlite") if kind == "SQLite" else PostgresStore(server.dsn, pool_size=1)
        try:
            ledger = Ledger(store)

            def record() -> None:
                request = uuid.uuid4().hex
                ledger.record(model="bench", key_id="calls", budgets=["calls"], input_tokens=INPUT_TOKENS,
                              output_tokens=16, usd=COST_USD, request_id=request, forget_before=time.time() - 3600,
                              answered=Answered(request, "chatcmpl-scripted", "bench", "stable", None, "calls"))

            found[kind] = {"budget total (Ledger.spent)": timed(lambda: ledger.spent("calls", "month"), n),
                           "metering (Ledger.record)": timed(record, n)}
            if kind == "SQLite":
                continue
            with psycopg.connect(server.dsn, autocommit=True) as conn:
                found[kind] = {"one round trip (SELECT 1, autocommit)": timed(lambda: conn.execute("SELECT 1"), n),
                               **found[kind]}
            limiter = SharedRateLimiter(ledger)
            key = KeySpec(id=f"calls-{uuid.uuid4().hex[:8]}", requests_per_minute=10**7)
            for size in WINDOW_ROWS:
                store.query("DELETE FROM rate_buckets WHERE key_id = ?", (key.id,))
                now = int(time.time())
                with store.transaction() as tx:  # `size` requests over the 40 seconds before the last 10
                    tx.executemany("INSERT INTO rate_buckets VALUES (?, ?, ?, 0)",
                                   [(key.id, now - 50 + second, size // 40) for second in range(40) if size])
                found[kind][f"rate admission, {size} requests in the window"] = timed(lambda: limiter.admit(key), n)
            store.query("DELETE FROM rate_buckets WHERE key_id = ?", (key.id,))
            store.query("DELETE FROM daily WHERE name = 'calls'")
        finally:
            store.close()
    return found


def costs_report(found: dict[str, dict[str, tuple[float, float]]]) -> None:
    say("\nEach store call a request makes, timed in this process through llmctl's Ledger and SharedRateLimiter "
        "(p50 / p99 ms). Per request the SQLite gateway meters once (budget totals cached for 1 s, rate limits in "
        "memory); the PostgreSQL gateway reads the budget total (again after metering only for a budget with "
        "alert_at), meters, and for a rate-limited key admits against the shared window (one-second buckets of the "
        "last 60 s):\n")
    say("| call | SQLite | PostgreSQL |")
    say("|---|---|---|")
    for call in found["PostgreSQL"]:
        cells = [f"{found[k][call][0]:.2f} / {found[k][call][1]:.2f}" if call in found[k] else
                 "in memory" if "admission" in call else "" for k in ("SQLite", "PostgreSQL")]
        say(f"| {call} | " + " | ".join(cells) + " |")


# --- 1. latency one at a time ----------------------------------------------------------------------------------------


def by_round(samples: list, per_round: int) -> list[list[float]]:
    return [[s.latency for s in samples[i:i + per_round] if s.ok] for i in range(0, len(samples), per_round)]


def latency_report(scenario: Scenario) -> dict[str, tuple[float, float]]:
    table = {row.name: row for row in rows(scenario, lambda text: 0)}
    direct = table["direct"].latency
    say(f"\n### 1. Latency, one request at a time ({scenario.rounds} interleaved rounds of {scenario.per_worker} "
        "requests per target; whole answers from an upstream answering at once)\n")
    say("| target | requests (failed) | latency p50 | p99 | added p50 | added p99 |")
    say("|---|---|---|---|---|---|")
    for name, row in table.items():
        added = (None, None) if name == "direct" else tuple(
            None if a is None or b is None else a - b for a, b in zip(row.latency, direct))
        say(f"| {name} | {row.n} ({row.failed}) | {ms(row.latency[0])} | {ms(row.latency[1])} | {plus(added[0])} "
            f"| {plus(added[1])} |")
        for error in row.errors:
            say(f"  {name} failure: {error}")
    differences = {}
    tenth = max(1, scenario.rounds // 10)
    say("\nPostgreSQL over SQLite, same key (ms): the difference of the percentiles above; and of each round's "
        f"p50s, the median over the rounds, its range, and its median over the first and the last {tenth} rounds "
        "(the shared rate window fills as the run goes on):\n")
    say("| key | p50 | p99 | per-round p50: median | min | max | first rounds | last rounds |")
    say("|---|---|---|---|---|---|---|---|")
    for key in ("rate-limited key", "key without limits"):
        sqlite, pg = table[f"SQLite, {key}"], table[f"PostgreSQL, {key}"]
        if None in sqlite.latency or None in pg.latency:
            continue
        p50, p99 = pg.latency[0] - sqlite.latency[0], pg.latency[1] - sqlite.latency[1]
        rounds_pg = by_round(scenario.results[f"PostgreSQL, {key}"].samples, scenario.per_worker)
        rounds_sqlite = by_round(scenario.results[f"SQLite, {key}"].samples, scenario.per_worker)
        per_round = [(statistics.median(a) - statistics.median(b)) * 1000
                     for a, b in zip(rounds_pg, rounds_sqlite) if a and b]
        differences[key] = (p50, p99)
        say(f"| {key} | {p50:+.2f} | {p99:+.2f} | {statistics.median(per_round):+.2f} | {min(per_round):+.2f} "
            f"| {max(per_round):+.2f} | {statistics.median(per_round[:tenth]):+.2f} "
            f"| {statistics.median(per_round[-tenth:]):+.2f} |")
    return differences


# --- 2. throughput ---------------------------------------------------------------------------------------------------


def throughput_report(scenario: Scenario, load: MeteredLoad, cpus: int) -> dict[str, float]:
    table = {row.name: row for row in rows(scenario, lambda text: 0)}
    say(f"\n### 2. Throughput, {scenario.concurrency} clients ({scenario.rounds} interleaved round(s) of "
        f"{scenario.duration_s:g} s per target; whole answers from two upstream processes answering at once)\n")
    say("CPU: ms of CPU per completed request, by process, over the timed phases; each gateway: a gateway "
        "process's CPU use, in % of one CPU; machine: the whole machine's busy CPU over those phases, out of "
        f"{cpus * 100}%, and of it: other processes' (this machine is shared), interrupts' (the loopback's packets), "
        f"and stolen by the hypervisor; ceiling: {cpus} CPUs / the CPU a request took in all of this benchmark's "
        "processes.\n")
    say("| target | requests (failed) | req/s | latency p50 | p99 | gateways CPU | PostgreSQL CPU | upstreams CPU "
        "| load generator CPU | each gateway | machine (others, interrupts, steal) | ceiling req/s |")
    say("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rates: dict[str, float] = {}
    ceilings: dict[str, float] = {}
    ours = ("gateways", "PostgreSQL", "upstreams", "load generator")
    for name, row in table.items():
        cpu = load.cpu.get((scenario.title, name), {})
        wall = cpu.get("wall") or 0.0
        done = max(1, row.n - row.failed)
        per = {k: cpu.get(k, 0.0) * 1000 / done for k in ours}
        total = sum(per.values())
        busy = cpu.get("machine", 0.0) / wall * 100 if wall else 0.0
        share = {k: cpu.get(k, 0.0) / wall * 100 if wall else 0.0 for k in (*ours, "interrupts", "steal")}
        others = max(0.0, busy - sum(share[k] for k in (*ours, "interrupts")))
        each = cpu.get("gateways", 0.0) / wall / load.spread.get(name, 1) * 100 if wall and name != "direct" else None
        rates[name] = row.rps or 0.0
        ceilings[name] = cpus * 1000 / total if total else 0.0
        say(f"| {name} | {row.n} ({row.failed}) | {row.rps or 0:.0f} | {ms(row.latency[0])} | {ms(row.latency[1])} "
            + "".join(f"| {per[k]:.2f} " for k in ours)
            + f"| {'' if each is None else f'{each:.0f}%'} | {busy:.0f}% ({others:.0f}%, {share['interrupts']:.0f}%, "
            f"{share['steal']:.0f}%) "
            f"| {cpus * 1000 / total if total else 0:.0f} |")
        for error in row.errors:
            say(f"  {name} failure: {error}")
    rows_seen = {name: statistics.mean(counts) for (title, name), counts in load.window_rows.items()
                 if title == scenario.title}
    if rows_seen:
        say("\nRequests in a rate-limited key's shared window (read by every admission as one-second buckets) at the "
            "end of its phases, "
            "mean: " + "; ".join(f"{name}: {count:.0f}" for name, count in rows_seen.items()))
    say()
    for suffix in ("", ", rate-limited key"):
        one, two = rates.get(f"PostgreSQL, 1 gateway{suffix}"), rates.get(f"PostgreSQL, 2 gateways{suffix}")
        sqlite = rates.get(f"SQLite, 1 gateway{suffix}")
        if one and two and sqlite:
            ceiling = ceilings[f"PostgreSQL, 2 gateways{suffix}"]
            per_round = [b / a for a, b in zip(load.rates[(scenario.title, f"PostgreSQL, 1 gateway{suffix}")],
                                               load.rates[(scenario.title, f"PostgreSQL, 2 gateways{suffix}")]) if a]
            say(f"two PostgreSQL gateways / one{suffix or ', key without limits'}: {two / one:.2f}x "
                f"(goal >= {GOAL_RATIO}x; per round: median {statistics.median(per_round):.2f}x, "
                f"{min(per_round):.2f} to {max(per_round):.2f}); the most this machine allows at two gateways' CPU "
                f"per request, {ceiling:.0f} req/s, / one gateway's rate: {ceiling / one:.2f}x; one PostgreSQL "
                f"gateway / one SQLite gateway: {one / sqlite:.2f}")
    return rates


# --- 3. the budget race ----------------------------------------------------------------------------------------------


@dataclass
class Race:
    answered: int = 0
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    metered: int = 0
    spent: float = 0.0
    seconds: float = 0.0


async def race_once(gateways: list[tuple[str, int]], model: str, server: PostgresServer) -> Race:
    """RACE_CLIENTS clients on each gateway, all starting together, each asking until it is refused."""
    race = Race()
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Spend it."}]}).encode()
    connections = [Connection(*where) for where in gateways for _ in range(RACE_CLIENTS)]
    for connection in connections:
        await connection.ensure()
    go = asyncio.Event()

    async def client(connection: Connection) -> None:
        await go.wait()
        while True:
            sample = await connection.post("/v1/chat/completions", body, bearer("budget-only"), False)
            if sample.ok:
                race.answered += 1
                continue
            if (sample.error or "").startswith("HTTP 429"):
                race.refused += 1
            else:
                race.errors.append(sample.error or "?")
            return

    tasks = [asyncio.create_task(client(c)) for c in connections]
    began = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    race.seconds = time.perf_counter() - began
    for connection in connections:
        await connection.close()
    # Every answer is metered right after it left, before its connection's next request is read; settle anyway.
    previous = None
    for _ in range(50):
        found = store_query(server, "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(usd), 0) FROM daily "
                                    "WHERE scope = 'budget' AND name = 'race'")[0]
        if found == previous:
            break
        previous = found
        await asyncio.sleep(0.1)
    race.metered, race.spent = int(found[0]), float(found[1])
    store_query(server, "DELETE FROM daily WHERE scope = 'budget' AND name = 'race'")  # the next race starts at $0
    return race


async def races(gateways: list[tuple[str, int]], server: PostgresServer, repeats: int) -> dict[str, list[Race]]:
    store_query(server, "DELETE FROM daily WHERE scope = 'budget' AND name = 'race'")
    found: dict[str, list[Race]] = {}
    for model in ("race", "race-slow"):
        for _ in range(repeats):
            found.setdefault(model, []).append(await race_once(gateways, model, server))
    return found


def race_report(found: dict[str, list[Race]], gateways: int) -> float:
    clients = gateways * RACE_CLIENTS
    bound = clients * COST_USD
    say(f"\n### 3. Budget race: ${RACE_LIMIT_USD:.2f} budget, ${COST_USD:.2f} a request "
        f"({int(RACE_LIMIT_USD / COST_USD)} requests), {gateways} PostgreSQL gateways x {RACE_CLIENTS} clients "
        f"asking until refused\n")
    say(f"bound: the requests that can be in flight when the total reaches the limit, {clients} x ${COST_USD:.2f} = "
        f"${bound:.2f}\n")
    say("| upstream | race | answered | metered | spent | overrun | overrun / bound | refused | errors | s |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    worst = 0.0
    for model, runs in found.items():
        label = "at once" if model == "race" else f"after {SLOW_S * 1000:.0f} ms"
        for number, race in enumerate(runs, 1):
            overrun = race.spent - RACE_LIMIT_USD
            worst = max(worst, overrun)
            say(f"| {label} | {number} | {race.answered} | {race.metered} | ${race.spent:.2f} | ${overrun:+.2f} "
                f"| {overrun / bound:.2f} | {race.refused} | {len(race.errors)} | {race.seconds:.2f} |")
            for error in sorted(set(race.errors))[:3]:
                say(f"  error: {error}")
        overruns = [r.spent - RACE_LIMIT_USD for r in runs]
        say(f"| {label} | max | | | | ${max(overruns):+.2f} | {max(overruns) / bound:.2f} | | | |")
    return worst


# --- main ------------------------------------------------------------------------------------------------------------


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop where it is installed, as gateway_overhead's load does; else on asyncio's own loop."""
    if importlib.util.find_spec("uvloop") is None:
        return asyncio.run(coroutine)
    import uvloop

    return uvloop.run(coroutine)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter run, for a smoke check")
    parser.add_argument("--keep", action="store_true", help="leave the specs, logs and SQLite ledger it wrote")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        return serve_upstream()
    # SIGTERM, like Ctrl-C, unwinds through the finally below, which stops PostgreSQL and every process started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    began = time.monotonic()
    cpus = os.cpu_count() or 1
    say(f"# llmctl gateway store benchmark{' (--quick)' if args.quick else ''}")
    say(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpus} CPUs ({cpu_model()}), Python "
        f"{platform.python_version()}, llmctl {version('llmctl')}, uvicorn {version('uvicorn')}, httpx "
        f"{version('httpx')}, psycopg {version('psycopg')}, psycopg-pool {version('psycopg-pool')}; "
        f"load average {os.getloadavg()[0]:.2f} at the start")
    processes: list[Proc] = []
    scratch = Path(tempfile.mkdtemp(prefix="llmctl-store-bench-"))
    server: PostgresServer | None = None
    try:
        server = PostgresServer()  # a directory only, until init; closed below whatever happens from here on
        server.init()
        pg_version = store_query(server, "SHOW server_version")[0][0]
        say(f"PostgreSQL {pg_version} ({server.bin}), fsync=off as tests/postgres_server.py runs it; an 8 KiB "
            f"append + fdatasync takes {fsync_ms(scratch):.2f} ms (median) on this machine's disk")
        os.environ[DSN_ENV] = server.dsn  # the PostgreSQL gateways (started below) read it from their environment
        upstreams = [start_upstream(f"upstream {i}", scratch / f"upstream-{i}.log", processes) for i in (1, 2)]
        fast, slow = [u["fast"] for u in upstreams], [u["slow"] for u in upstreams]
        say("starting a SQLite gateway and two PostgreSQL gateways ...")
        gateways = []
        for name, shared in (("sqlite", False), ("postgres-a", True), ("postgres-b", True)):
            gateways.append(start_gateway(scratch, name, spec(scratch, name, fast, slow, shared)))
            processes.append(gateways[-1])
        sqlite, pg_a, pg_b = (address(g.base) for g in gateways)
        meters = Meters(gateways, [p for p in processes if p not in gateways], server)
        load = MeteredLoad([[{"role": "user", "content": "Where is my refund?"}]], meters)

        # 1. Latency
        direct = Target("direct", {"bench": [address(u) for u in fast]}, b"")
        latency = Scenario("latency", "bench", False, 1, 15 if args.quick else 60, per_worker=40 if args.quick else 50)
        latency_targets = [direct]
        for key, label in (("paced", "rate-limited key"), ("budget-only", "key without limits")):
            latency_targets += [Target(f"SQLite, {label}", {"bench": [sqlite]}, bearer(key)),
                                Target(f"PostgreSQL, {label}", {"bench": [pg_a]}, bearer(key))]

        async def part_one() -> None:
            await load.run(latency, latency_targets)
            for target in latency_targets:
                await target.close()

        say("\n1. latency, one request at a time ...")
        run(part_one())
        differences = latency_report(latency)
        say(f"\nThe rate-limited key's shared window held {window_rows(server, 'paced')} requests at the end (a "
            "PostgreSQL admission of that key reads them as at most 61 one-second buckets).")
        costs_report(store_costs(server, scratch, 50 if args.quick else 200))

        # 2. Throughput
        throughput = Scenario("throughput", "bench", False, THROUGHPUT_CLIENTS, 3 if args.quick else 8,
                              duration_s=2.0 if args.quick else 2.5)
        throughput_targets = [Target("direct", {"bench": [address(u) for u in fast]}, b"")]
        for key, suffix in (("budget-only", ""), ("rpm", ", rate-limited key")):
            one, two = ("budget-only", "budget-only") if key == "budget-only" else ("rpm-one", "rpm-two")
            throughput_targets += [
                Target(f"SQLite, 1 gateway{suffix}", {"bench": [sqlite]}, bearer(one), gateways[0]),
                Target(f"PostgreSQL, 1 gateway{suffix}", {"bench": [pg_a]}, bearer(one), gateways[1]),
                Target(f"PostgreSQL, 2 gateways{suffix}", {"bench": [pg_a, pg_b]}, bearer(two))]
        load.count_rows = {"PostgreSQL, 1 gateway, rate-limited key": "rpm-one",
                           "PostgreSQL, 2 gateways, rate-limited key": "rpm-two"}

        async def part_two() -> None:
            await load.run(throughput, throughput_targets)
            for target in throughput_targets:
                await target.close()

        say("\n2. throughput ...")
        run(part_two())
        rates = throughput_report(throughput, load, cpus)

        # 3. The budget race
        say("\n3. the budget race ...")
        found = run(races([pg_a, pg_b], server, 2 if args.quick else 5))
        worst = race_report(found, 2)

        say("\n## Against the issue's goals\n")
        for key, (p50, p99) in differences.items():
            say(f"- PostgreSQL over SQLite, {key}: {p50:+.2f} ms p50, {p99:+.2f} ms p99 (goal: < "
                f"{GOAL_ADDED_P50_MS:g} ms p50)")
        one, two = rates.get("PostgreSQL, 1 gateway"), rates.get("PostgreSQL, 2 gateways")
        if one and two:
            say(f"- two PostgreSQL gateways / one, key without limits: {two / one:.2f}x (goal >= {GOAL_RATIO}x) on "
                f"{cpus} CPUs shared by the load generator, the upstreams, PostgreSQL and the gateways")
        say(f"- budget race: max overrun ${worst:+.2f} against a bound of ${2 * RACE_CLIENTS * COST_USD:.2f}")
        say(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    finally:  # gateways first, then the upstreams, then PostgreSQL
        for proc in reversed(processes):
            proc.stop()
        if server is not None:
            server.close()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    say(f"\n{time.monotonic() - began:.0f} s in all" + (f"; specs, logs and the SQLite ledger are in {scratch}"
                                                          if args.keep else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
