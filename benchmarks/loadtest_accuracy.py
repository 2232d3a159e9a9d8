#!/usr/bin/env python
"""How accurately does llmctl's load-test verifier measure TTFT and ITL, and how does it compare with a peer?

    python benchmarks/loadtest_accuracy.py              # both parts, about 2 minutes on 2 cores
    python benchmarks/loadtest_accuracy.py --skip-engine  # part 1 only
    python benchmarks/loadtest_accuracy.py --skip-peer    # part 2 without guidellm

Part 1 (measurement accuracy): the scripted test double (tests/scripted_server.py) streams with a known time to
first token and a known gap between tokens. llmctl's verifier (`run_worker`, the Locust worker subprocess) load-tests
it at 10 users, and its percentiles are compared with the nominal delays and with what the double actually did
(a subclass records, on the server side, when each request was received and when each token was written).

Part 2 (peer comparison): a real llama.cpp server (llama-cpp-python, SmolLM2-135M Q4_1) is load-tested by llmctl
and then by guidellm (the peer tool, when installed) with the same prompts, concurrency, duration and max_tokens.

Timings are printed, not asserted: the process exits 0 unless something breaks. Every process it starts is stopped.
See benchmarks/README.md for figures and what they mean.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from support import launch, say, start_llama, version

from scripted_server import ScriptedServer  # on the path once support is imported

from llmctl.config.schema import LoadTest
from llmctl.verify.model import LoadSpec, Sample
from llmctl.verify.prompts import load_prompts
from llmctl.verify.run import run_worker
from llmctl.verify.stats import percentile, summarise

GOAL = 0.05  # the target: measured/true within 5% at 10 users

# Part 1: the double's script
TTFT_S, ITL_S, TOKENS = 0.300, 0.040, 24
P1_USERS, P1_DURATION_S = 10, 15.0

# Part 2: the real engine and the load both tools put on it
ENGINE_USERS, ENGINE_DURATION_S, ENGINE_MAX_TOKENS = 2, 20.0, 32
PEER_TIMEOUT_S = 150


def div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a is not None and b else "n/a"


def num(value: float | None, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if value is not None else "n/a"


# --------------------------------------------------------------------------------------------------------------------
# Part 1: measurement accuracy against the scripted double
# --------------------------------------------------------------------------------------------------------------------


class TimedScriptedServer(ScriptedServer):
    """The scripted double, recording on the server side when each request arrived and each token was written."""

    def __enter__(self) -> "TimedScriptedServer":
        self.records: list[dict] = []
        self._current = threading.local()
        self._lock = threading.Lock()
        return super().__enter__()  # type: ignore[return-value]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        record = {"received": time.perf_counter(), "tokens": []}
        self._current.record = record
        try:
            super()._answer(handler)
        finally:
            with self._lock:
                self.records.append(record)

    def _chunk(self, handler: BaseHTTPRequestHandler, text: str) -> None:
        super()._chunk(handler, text)  # written and flushed: the moment the token leaves the server
        if '"content"' in text:
            self._current.record["tokens"].append(time.perf_counter())


@dataclass
class AccuracyResult:
    name: str
    spawn_rate: float
    requests: int
    failures: int
    connections: int
    client: dict[str, float]  # what llmctl measured
    server: dict[str, float]  # what the double actually did
    nominal: dict[str, float]

    def failures_vs_nominal(self) -> list[str]:
        return [f"{key} {self.client[key] / self.nominal[key]:.3f}" for key in self.client
                if abs(self.client[key] / self.nominal[key] - 1) > GOAL]


def accuracy_run(name: str, spawn_rate: float) -> AccuracyResult:
    with TimedScriptedServer(mode="stream", ttft_s=TTFT_S, itl_s=ITL_S, tokens=TOKENS) as server:
        spec = LoadSpec(model="scripted", served_name="scripted", endpoints=[server.base_url], users=P1_USERS,
                        spawn_rate=spawn_rate, duration_s=P1_DURATION_S, max_tokens=TOKENS,
                        prompts=load_prompts(None, None), request_timeout_s=10.0)
        result = run_worker(spec, lambda fields: None)
        records, connections = list(server.records), server.connections
    ok = [s for s in result.samples if s.ok]
    if not ok:
        raise RuntimeError(f"part 1 ({name}): no successful request; failures: "
                           f"{summarise(result.samples, result.elapsed_s, P1_USERS).failure_reasons}")
    ttft = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    itl = [gap for s in ok for gap in s.itl_ms]
    complete = [r for r in records if len(r["tokens"]) == TOKENS]
    server_ttft = [(r["tokens"][0] - r["received"]) * 1000 for r in complete]
    server_itl = [(b - a) * 1000 for r in complete for a, b in zip(r["tokens"], r["tokens"][1:])]
    pick = lambda values: {"p50": percentile(values, 50), "p95": percentile(values, 95)}  # noqa: E731
    both = lambda t, i: {f"ttft_{k}": v for k, v in pick(t).items()} | {f"itl_{k}": v for k, v in pick(i).items()}  # noqa: E731
    return AccuracyResult(
        name=name, spawn_rate=spawn_rate, requests=len(result.samples), failures=len(result.samples) - len(ok),
        connections=connections,
        client=both(ttft, itl), server=both(server_ttft, server_itl),
        nominal={"ttft_p50": TTFT_S * 1000, "ttft_p95": TTFT_S * 1000, "itl_p50": ITL_S * 1000,
                 "itl_p95": ITL_S * 1000})


def print_accuracy(result: AccuracyResult) -> None:
    say(f"\n  scenario '{result.name}': {P1_USERS} users, spawn rate {result.spawn_rate:g}/s, "
        f"{P1_DURATION_S:g} s, {result.requests} requests ({result.failures} failed), "
        f"{result.connections} TCP connections seen by the server")
    say(f"    {'metric':<10}{'nominal':>9}{'server':>10}{'llmctl':>10}{'llmctl/nominal':>16}{'llmctl/server':>15}"
        f"{'client-server':>15}")
    for key, label in (("ttft_p50", "TTFT p50"), ("ttft_p95", "TTFT p95"), ("itl_p50", "ITL p50"),
                       ("itl_p95", "ITL p95")):
        c, s, n = result.client[key], result.server[key], result.nominal[key]
        say(f"    {label:<10}{n:>9.1f}{s:>10.2f}{c:>10.2f}{c / n:>16.3f}{c / s:>15.3f}{c - s:>12.2f} ms")
    bad = result.failures_vs_nominal()
    say(f"    {'PASS' if not bad else 'FAIL'}: measured/nominal within {GOAL:.0%} at {P1_USERS} users"
        + (f" (outside: {', '.join(bad)})" if bad else ""))


def part1() -> list[AccuracyResult]:
    say("=" * 100)
    say(f"Part 1: measurement accuracy. Scripted double: TTFT {TTFT_S * 1000:.0f} ms, ITL {ITL_S * 1000:.0f} ms, "
        f"{TOKENS} tokens per answer")
    say("  'server' = what the double actually did: request received -> first token written, and gaps between "
        "token writes (includes its sleep overshoot);")
    say("  'llmctl' = what llmctl's worker measured on the client side (request start -> first content chunk read).")
    results = []
    for name, spawn_rate in (("llmctl default ramp", LoadTest().spawn_rate), ("all users at once", float(P1_USERS))):
        results.append(accuracy_run(name, spawn_rate))
        print_accuracy(results[-1])
    bad = [f"'{r.name}': {', '.join(r.failures_vs_nominal())}" for r in results if r.failures_vs_nominal()]
    say(f"\n  Part 1 verdict: {'PASS' if not bad else 'FAIL'} against the {GOAL:.0%} goal at {P1_USERS} users"
        + (f"; outside the goal in {'; '.join(bad)}" if bad else " (TTFT and ITL, p50 and p95, both scenarios)"))
    return results


# --------------------------------------------------------------------------------------------------------------------
# Part 2: the real engine, llmctl and a peer load tester
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class EngineFigures:
    tool: str
    requests: int
    failures: int
    tokens_per_request: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    itl_p50: float | None
    itl_p95: float | None
    itl_request_mean_p50: float | None = None  # guidellm's ITL definition, where computable
    note: str = ""
    engine: "EngineLog | None" = None  # what llama.cpp itself logged while this tool ran


@dataclass
class EngineLog:
    """llama.cpp's own per-request timings (llama_perf_context_print lines) over one tool's run."""

    requests: int
    decode_ms_per_token: float | None  # eval time / runs, summed over requests
    request_ms: float | None  # mean "total time" per request: prefill + decode, no queueing, no HTTP


_EVAL = re.compile(r"llama_perf_context_print:\s+eval time =\s+([\d.]+) ms /\s+(\d+) runs")
_TOTAL = re.compile(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms")


def engine_log(log_path: Path, offset: int) -> EngineLog:
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    evals = [(float(ms), int(runs)) for ms, runs in _EVAL.findall(text)]
    totals = [float(ms) for ms in _TOTAL.findall(text)]
    runs = sum(r for _, r in evals)
    return EngineLog(requests=len(totals), decode_ms_per_token=sum(ms for ms, _ in evals) / runs if runs else None,
                     request_ms=sum(totals) / len(totals) if totals else None)


def measured(log_path: Path, run):  # noqa: ANN001, ANN201
    """Run one tool, attaching what the engine logged meanwhile."""
    offset = log_path.stat().st_size
    figures = run()
    if isinstance(figures, EngineFigures):
        figures.engine = engine_log(log_path, offset)
    return figures


def weighted_percentile(pairs: list[tuple[float, float]], q: float) -> float | None:
    """Percentile of values weighted by integer counts (each value repeated `count` times)."""
    values = [value for value, count in pairs for _ in range(int(count))]
    return percentile(values, q) if values else None


def warm_up(base: str) -> None:
    body = json.dumps({"model": "assistant", "messages": [{"role": "user", "content": "Say hello."}],
                       "max_tokens": 8}).encode()
    request = urllib.request.Request(f"{base}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()


def run_llmctl(base: str) -> EngineFigures:
    spec = LoadSpec(model="assistant", served_name="assistant", endpoints=[f"{base}/v1"], users=ENGINE_USERS,
                    spawn_rate=float(ENGINE_USERS), duration_s=ENGINE_DURATION_S, max_tokens=ENGINE_MAX_TOKENS,
                    prompts=load_prompts(None, None), request_timeout_s=60.0)
    result = run_worker(spec, lambda fields: None)
    summary = summarise(result.samples, result.elapsed_s, ENGINE_USERS)
    ok: list[Sample] = [s for s in result.samples if s.ok]
    per_request = [(sum(s.itl_ms) / len(s.itl_ms), len(s.itl_ms)) for s in ok if s.itl_ms]
    return EngineFigures(
        tool=f"llmctl {version('llmctl')}", requests=summary.requests, failures=summary.failures,
        tokens_per_request=sum(s.output_tokens for s in ok) / len(ok) if ok else None,
        ttft_p50=summary.ttft_ms.p50 if summary.ttft_ms else None,
        ttft_p95=summary.ttft_ms.p95 if summary.ttft_ms else None,
        itl_p50=summary.itl_ms.p50 if summary.itl_ms else None,
        itl_p95=summary.itl_ms.p95 if summary.itl_ms else None,
        itl_request_mean_p50=weighted_percentile(per_request, 50))


def guidellm_config(base: str, scratch: Path) -> Path:
    """A guidellm scenario file: the same prompts (as chat messages, so no tokenizer is ever loaded), concurrency,
    duration and max_tokens as llmctl's run."""
    prompts = load_prompts(None, None)
    data = scratch / "prompts.jsonl"
    with data.open("w") as out:
        for index in range(400):  # far more than 20 s can use; guidellm stops when its dataset runs out
            out.write(json.dumps({"messages": prompts[index % len(prompts)]}) + "\n")
    config = {"spec": {
        "backend": {
            "kind": "openai_http", "target": base, "model": "assistant", "request_format": "/v1/chat/completions",
            # llama-cpp-python has no /health route; validate against /v1/models instead
            "api_routes": {"/health": "v1/models"},
            "http2": False,
            # guidellm sends max_completion_tokens, which llama-cpp-python ignores; max_tokens it honours
            "extras": {"body": {"max_tokens": ENGINE_MAX_TOKENS}},
        },
        "profile": {"kind": "concurrent", "streams": [ENGINE_USERS]},
        "constraints": [{"kind": "max_duration", "seconds": ENGINE_DURATION_S}],
        "data": [{"kind": "json_file", "path": str(data)}],
        "outputs": [{"kind": "json", "path": str(scratch / "guidellm.json")}],
    }}
    path = scratch / "guidellm-scenario.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def run_guidellm(base: str, scratch: Path) -> EngineFigures | str:
    """guidellm's figures, or why there are none."""
    if importlib.util.find_spec("guidellm") is None:
        return "guidellm is not installed in this environment (pip install guidellm)"
    config = guidellm_config(base, scratch)
    log_path = scratch / "guidellm.log"
    command = [sys.executable, "-m", "guidellm", "run", "--config", str(config), "--disable-console-interactive"]
    say(f"  running: guidellm run --config {config.name} --disable-console-interactive")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = launch("guidellm", command, log_path, env, cwd=scratch)
    try:
        code = proc.popen.wait(timeout=PEER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        proc.stop(grace_s=5.0)
    tail = "\n".join("    " + line for line in log_path.read_text(errors="replace").splitlines()[-12:])
    if code != 0:
        why = f"did not finish within {PEER_TIMEOUT_S} s" if code is None else f"exited with code {code}"
        return f"guidellm {why}; its last output:\n{tail}"
    try:
        report = json.loads((scratch / "guidellm.json").read_text())
        bench = report["benchmarks"][0]
        metrics = bench["metrics"]
        ok = lambda name: metrics[name]["successful"]  # noqa: E731
        totals = metrics["request_totals"]
        ttft, itl, tokens = ok("time_to_first_token_ms"), ok("inter_token_latency_ms"), ok("output_token_count")
    except (OSError, ValueError, KeyError, IndexError) as exc:
        return f"guidellm finished but its JSON report could not be read ({exc!r}); its last output:\n{tail}"
    if not ttft.get("count"):
        return f"guidellm completed no request successfully; its last output:\n{tail}"
    return EngineFigures(
        tool=f"guidellm {version('guidellm')}", requests=int(totals.get("successful", 0) + totals.get("errored", 0)),
        failures=int(totals.get("errored", 0)), tokens_per_request=tokens.get("mean"),
        ttft_p50=ttft["percentiles"]["p50"], ttft_p95=ttft["percentiles"]["p95"],
        itl_p50=itl["percentiles"]["p50"], itl_p95=itl["percentiles"]["p95"], itl_request_mean_p50=None,
        note=f"{int(totals.get('incomplete', 0))} cancelled in flight at the end")


def print_engine(runs: list[EngineFigures], peer: EngineFigures | None) -> None:
    """llmctl's runs (before and after the peer's) beside the peer's.

    The engine's speed drifts between runs (it gets faster over its first minutes), so llmctl runs before and after
    the peer; under a steady drift, the mean of the two estimates llmctl at the peer's time, and #2/#1 shows the drift.
    """
    name = peer.tool.split()[0] if peer else "peer"
    headers = [f"llmctl #{i + 1}" for i in range(len(runs))] + [name if peer else "(peer skipped)"]
    headers += [f"llmctl/{name}"] if peer else []
    headers += ["drift #2/#1"] if len(runs) > 1 else []
    say(f"\n    {'':<42}" + "".join(f"{h:>17}" for h in headers))

    def row(label: str, get, digits: int, peer_get=None) -> None:  # noqa: ANN001
        values = [get(r) for r in runs]
        cells = [num(v, digits) for v in values]
        if peer:
            peer_value = (peer_get or get)(peer)
            mean = sum(values) / len(values) if None not in values else None
            cells += [num(peer_value, digits), ratio(mean, peer_value)]
        else:
            cells += ["-"]
        if len(runs) > 1:
            cells += [ratio(values[1], values[0])]
        say(f"    {label:<42}" + "".join(f"{c:>17}" for c in cells))

    say(f"    {'requests (failed)':<42}" + "".join(f"{f'{r.requests} ({r.failures})':>17}" for r in runs)
        + (f"{f'{peer.requests} ({peer.failures})':>17}" if peer else f"{'-':>17}"))
    row("output tokens per request", lambda r: r.tokens_per_request, 1)
    row("TTFT p50 ms", lambda r: r.ttft_p50, 1)
    row("TTFT p95 ms", lambda r: r.ttft_p95, 1)
    row("ITL p50 ms (each tool's own definition)", lambda r: r.itl_p50, 2)
    row("ITL p95 ms (each tool's own definition)", lambda r: r.itl_p95, 2)
    row("ITL p50 ms (per-request mean, guidellm's)", lambda r: r.itl_request_mean_p50, 2,
        peer_get=lambda r: r.itl_p50)
    say("    what llama.cpp itself logged meanwhile:")
    row("  requests served", lambda r: r.engine and r.engine.requests, 0)
    row("  decode ms per token (engine)", lambda r: r.engine and r.engine.decode_ms_per_token, 2)
    row("  ms per request, prefill+decode (engine)", lambda r: r.engine and r.engine.request_ms, 1)
    say("    normalised by the engine's own speed in the same window (drift removed):")
    row("  TTFT p50 / engine ms per request", lambda r: div(r.ttft_p50, r.engine and r.engine.request_ms), 3)
    row("  ITL p50 / engine decode ms per token", lambda r: div(r.itl_p50, r.engine and r.engine.decode_ms_per_token),
        3)
    if peer:
        say(f"    (llmctl/{name} = mean of llmctl #1 and #2 over {name}; {name}: {peer.note})")


def part2(skip_peer: bool) -> None:
    say("\n" + "=" * 100)
    say(f"Part 2: the real engine. llama-cpp-python {version('llama_cpp_python')} serving SmolLM2-135M-Instruct Q4_1; "
        f"{ENGINE_USERS} concurrent users, {ENGINE_DURATION_S:g} s, max_tokens {ENGINE_MAX_TOKENS}, llmctl's sample "
        "prompts")
    with tempfile.TemporaryDirectory(prefix="llmctl-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        log_path = scratch / "llama-server.log"
        say("  starting a llama.cpp server")
        engine = start_llama("the llama.cpp server", log_path)
        base = engine.base
        try:
            say(f"  engine up at {base} ({' '.join(engine.popen.args[1:])}); one warm-up request")
            warm_up(base)
            say(f"  llmctl #1: llmctl's verifier (run_worker) for {ENGINE_DURATION_S:g} s")
            runs = [measured(log_path, lambda: run_llmctl(base))]
            peer: EngineFigures | str
            if skip_peer:
                peer = "skipped on request (--skip-peer)"
            else:
                say(f"  the peer: guidellm {version('guidellm')} for {ENGINE_DURATION_S:g} s")
                peer = measured(log_path, lambda: run_guidellm(base, scratch))
                if not isinstance(peer, str):
                    # The engine's speed drifts between 20 s windows; a second llmctl run after the peer's brackets
                    # it and shows how much of a llmctl/peer difference is drift rather than the tools.
                    say(f"  llmctl #2: llmctl's verifier again, after the peer, for {ENGINE_DURATION_S:g} s")
                    runs.append(measured(log_path, lambda: run_llmctl(base)))
        finally:
            engine.stop()
        if isinstance(peer, str):
            say(f"  peer half skipped: {peer}")
            print_engine(runs, None)
        else:
            print_engine(runs, peer)
    say("  Notes: llama-cpp-python runs one request at a time (--interrupt_requests False), so with 2 users each TTFT "
        "is mostly the wait\n  for the other user's answer. llmctl's TTFT clock starts before the request is sent "
        "(connection included), guidellm's at its first\n  header write. llmctl's ITL percentiles are over every "
        "gap; guidellm's over per-request mean gaps weighted by gap count.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-engine", action="store_true", help="run part 1 only")
    parser.add_argument("--skip-peer", action="store_true", help="in part 2, run llmctl only")
    args = parser.parse_args()
    # A SIGTERM must still run the finally blocks that stop the servers this script started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.monotonic()
    say(f"llmctl load-test accuracy benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, llmctl {version('llmctl')}, "
        f"locust {version('locust')}")
    part1()
    if not args.skip_engine:
        part2(args.skip_peer)
    say(f"\nfinished in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
