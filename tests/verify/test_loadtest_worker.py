"""The Locust worker, run for real in its subprocess against the scripted server: what it measures and how it fails.

Timing assertions are lower bounds only: the server sleeps at least as long as scripted, and a token cannot
arrive before it was sent, however busy the machine is.
"""
from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from scripted_server import ScriptedServer

from llmctl.verify.model import LoadSpec, Sample, WorkerResult
from llmctl.verify.run import run_worker

# A hang guard, not a timing assertion: every case here ends in seconds unless something hangs.
pytestmark = pytest.mark.timeout(180)

TTFT_MS, ITL_MS, TOKENS = 200, 30, 10


def _spec(endpoints: list[str], **fields: Any) -> LoadSpec:
    return LoadSpec(**{
        "model": "assistant", "served_name": "assistant", "endpoints": endpoints, "users": 1, "spawn_rate": 10,
        "duration_s": 1, "max_tokens": 16, "prompts": [[{"role": "user", "content": "Say hi."}]],
        "request_timeout_s": 2, **fields})


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections: bound (so nothing else takes it) but never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# --- bad inputs: each ends as failed samples that name the reason ----------------------------------------------


def _all_failed(result: WorkerResult, *reason: str) -> list[Sample]:
    assert result.samples, "the worker recorded no request at all"
    for sample in result.samples:
        assert not sample.ok and sample.ttft_ms is None
        assert sample.error and all(part in sample.error for part in reason), sample.error
    return result.samples


def test_unreachable_endpoint_fails_as_no_connection(closed_port: int) -> None:
    result = run_worker(_spec([f"http://127.0.0.1:{closed_port}/v1"]), lambda fields: None)
    _all_failed(result, "no connection", "refused")
    assert "gevent" not in sys.modules  # the monkey-patching stayed in the worker process


@pytest.mark.parametrize(("mode", "reason", "waited_ms"), [
    ("error500", ["HTTP 500", "scripted failure"], 0),
    ("json", ["not streamed", "application/json"], 0),
    ("malformed", ["malformed SSE", "{not json"], 0),
    ("silent", ["no token within 2s"], 2000),  # request_timeout_s=2: it gives up then, not before
    ("no_done", ["stream ended without [DONE]"], 0),
    ("hang", ["no response within 2s"], 2000),
])
def test_misbehaving_server_fails_with_its_reason(mode: str, reason: list[str], waited_ms: float) -> None:
    with ScriptedServer(mode=mode, ttft_s=0.05, itl_s=0.01) as server:  # type: ignore[arg-type]
        result = run_worker(_spec([server.base_url]), lambda fields: None)
        assert server.requests >= 1
    assert all(sample.latency_ms >= waited_ms for sample in _all_failed(result, *reason))


# --- correct measurement -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def measured() -> Iterator[dict[str, Any]]:
    """One 2-second test of two users over two endpoints: one reports usage, the other does not."""
    with ScriptedServer(mode="stream", ttft_s=TTFT_MS / 1000, itl_s=ITL_MS / 1000, tokens=TOKENS) as with_usage, \
            ScriptedServer(mode="stream", ttft_s=TTFT_MS / 1000, itl_s=ITL_MS / 1000, tokens=TOKENS,
                           usage=False) as without_usage:
        progress: list[dict[str, Any]] = []
        spec = _spec([with_usage.base_url, without_usage.base_url], users=2, duration_s=2, request_timeout_s=30)
        result = run_worker(spec, progress.append)
        yield {"result": result, "progress": progress, "with_usage": with_usage, "without_usage": without_usage}


def test_every_request_succeeds_and_each_endpoint_is_used(measured: dict[str, Any]) -> None:
    samples: list[Sample] = measured["result"].samples
    assert samples and all(sample.ok and sample.error is None for sample in samples)
    with_usage, without_usage = measured["with_usage"], measured["without_usage"]
    assert with_usage.requests >= 1 and without_usage.requests >= 1
    assert {sample.endpoint for sample in samples} == {with_usage.base_url, without_usage.base_url}
    assert measured["result"].elapsed_s >= 2
    assert "gevent" not in sys.modules


def test_output_tokens_from_usage_else_counted_from_chunks(measured: dict[str, Any]) -> None:
    samples: list[Sample] = measured["result"].samples
    reported = [s for s in samples if s.endpoint == measured["with_usage"].base_url]
    counted = [s for s in samples if s.endpoint == measured["without_usage"].base_url]
    assert reported and all(s.output_tokens == TOKENS and s.tokens_from_usage for s in reported)
    assert counted and all(s.output_tokens == TOKENS and not s.tokens_from_usage for s in counted)


def test_ttft_and_inter_token_gaps_are_at_least_the_scripted_ones(measured: dict[str, Any]) -> None:
    for sample in measured["result"].samples:
        assert sample.ttft_ms is not None and sample.ttft_ms >= TTFT_MS
        assert len(sample.itl_ms) == TOKENS - 1 and all(gap >= 0 for gap in sample.itl_ms)
        # Token k is sent no earlier than TTFT + k * ITL after the request; it cannot arrive before it is sent.
        # (A single gap can be a little shorter than ITL when the token before it was delivered late.)
        arrived = sample.ttft_ms
        for k, gap in enumerate(sample.itl_ms, start=1):
            arrived += gap
            assert arrived >= TTFT_MS + k * ITL_MS, (k, sample.ttft_ms, sample.itl_ms)
        assert sample.latency_ms >= arrived


def test_progress_arrives_while_the_test_runs(measured: dict[str, Any]) -> None:
    progress: list[dict[str, Any]] = measured["progress"]
    assert progress and set(progress[-1]) == {"elapsed_s", "requests", "failures", "p95_ms"}
    assert progress[-1]["requests"] >= 1 and progress[-1]["failures"] == 0


def test_connections_are_reused_so_ttft_has_no_connect_in_it() -> None:
    # Stopping at [DONE] without reading the end of the chunked body makes the client drop the connection,
    # and every following request would pay a TCP connect inside its time to first token.
    with ScriptedServer(mode="stream", ttft_s=0.02, itl_s=0.002, tokens=4) as server:
        spec = LoadSpec(model="m", served_name="m", endpoints=[server.base_url], users=2, spawn_rate=10,
                        duration_s=1.5, max_tokens=4, prompts=[[{"role": "user", "content": "hi"}]],
                        request_timeout_s=5)
        result = run_worker(spec, lambda fields: None)
    assert len(result.samples) >= 10 and all(sample.ok for sample in result.samples)
    assert server.connections == 2, f"{server.connections} connections for {len(result.samples)} requests"


def test_a_request_budget_stops_the_test_early_and_headers_go_with_every_request() -> None:
    # A rollout's analysis asks for exactly the requests a version lacks, pinned to it by a header.
    from gateway.upstream import RecordingUpstream

    with RecordingUpstream() as server:
        spec = _spec([server.base_url], users=2, duration_s=120, request_timeout_s=30, max_requests=5,
                     headers={"x-llmctl-version": "canary"}, api_key="sk-test")
        result = run_worker(spec, lambda fields: None)
    assert len(result.samples) == 5 and all(sample.ok for sample in result.samples)
    assert len(server.headers) == 5 and result.elapsed_s < spec.duration_s  # stopped by the count, not the clock
    assert all(h["x-llmctl-version"] == "canary" and h["authorization"] == "Bearer sk-test" for h in server.headers)
