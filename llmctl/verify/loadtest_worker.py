"""The load-test worker: Locust as a library, in its own process.

Run as `python -m llmctl.verify.loadtest_worker SPEC.json RESULT.json`. Locust is the first import because it
monkey-patches the standard library with gevent; that must never happen in the CLI process, which is why this is
the only module that imports locust. Progress goes to stdout as `PROGRESS {json}` lines, once a second.
"""
import locust  # noqa: F401  (first: gevent's monkey-patching must precede every other import)

import itertools  # noqa: E402
from collections.abc import Iterator  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
import requests  # noqa: E402
import urllib3  # noqa: E402
from locust import HttpUser, constant, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from llmctl.verify.model import LoadSpec, Sample, WorkerResult  # noqa: E402
from llmctl.verify.stats import percentile  # noqa: E402

# Past the test's duration, in-flight requests get this long to finish before the worker gives up on them.
_GRACE_S = 5.0
# After a failed request a user pauses, so a refused connection is not retried in a hot loop.
_BACKOFF_S = 0.1


def _stream(user: HttpUser, spec: LoadSpec, endpoint: str, messages: list[dict[str, str]], t0: float) -> Sample:
    """One streaming chat completion, timed from the client's side."""
    start = time.perf_counter()
    body = {"model": spec.served_name, "messages": messages, "max_tokens": spec.max_tokens, "stream": True,
            "stream_options": {"include_usage": True}}
    headers = {**spec.headers, **({"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {})}
    chunk_times: list[float] = []
    usage_tokens: int | None = None

    def failed(reason: str) -> Sample:
        return Sample(start_s=start - t0, endpoint=endpoint, ok=False, error=reason,
                      latency_ms=(time.perf_counter() - start) * 1000, output_tokens=len(chunk_times))

    try:
        with user.client.post(f"{endpoint}/chat/completions", json=body, headers=headers, stream=True,
                              timeout=(5, spec.request_timeout_s), catch_response=True, name=spec.model) as response:
            if response.status_code == 0:  # Locust's session turns connection errors into status 0
                if isinstance(response.error, requests.ReadTimeout):  # connected, but no response headers came
                    response.failure("no response")
                    return failed(f"no response within {spec.request_timeout_s:g}s")
                response.failure("no connection")
                return failed(f"no connection: {response.error}")
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return failed(f"HTTP {response.status_code}: {response.text[:120].strip()}")
            if "text/event-stream" not in response.headers.get("content-type", ""):
                response.failure("not streamed")
                return failed(f"not streamed (content-type {response.headers.get('content-type', 'none')})")
            buffer, done, finished = b"", False, 0.0
            chunks = response.iter_content(chunk_size=None)
            for data in chunks:
                arrived = time.perf_counter()
                buffer += data
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue  # blank separators, comments, event names
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        done, finished = True, arrived
                        break
                    try:
                        event = json.loads(payload)
                        choices = event.get("choices") or []
                        usage = event.get("usage")
                    except (ValueError, AttributeError):
                        response.failure("malformed SSE")
                        return failed(f"malformed SSE event: {payload[:80]!r}")
                    if usage and usage.get("completion_tokens") is not None:
                        usage_tokens = int(usage["completion_tokens"])
                    if any((choice.get("delta") or {}).get("content") for choice in choices):
                        chunk_times.append(arrived)
                if done:
                    break
                if arrived - start > spec.request_timeout_s:
                    break
            if not chunk_times:
                response.failure("no token")
                return failed(f"no token within {spec.request_timeout_s:g}s" if not done else "stream ended with no token")
            if not done:
                response.failure("incomplete stream")
                return failed("stream ended without [DONE]" if time.perf_counter() - start <= spec.request_timeout_s
                              else f"no complete answer within {spec.request_timeout_s:g}s")
            response.success()
            _drain(chunks)
    except Exception as exc:  # connection refused, reset, timeout: each is a failed request with its reason
        if _timed_out(exc):
            return failed(f"no token within {spec.request_timeout_s:g}s" if not chunk_times
                          else f"no complete answer within {spec.request_timeout_s:g}s")
        return failed(f"{type(exc).__name__}: {str(exc)[:160]}")
    end = finished
    return Sample(
        start_s=start - t0, endpoint=endpoint, ok=True, ttft_ms=(chunk_times[0] - start) * 1000,
        latency_ms=(end - start) * 1000,
        itl_ms=[(b - a) * 1000 for a, b in zip(chunk_times, chunk_times[1:])],
        output_tokens=usage_tokens if usage_tokens is not None else len(chunk_times),
        tokens_from_usage=usage_tokens is not None,
    )


def _timed_out(exc: Exception) -> bool:
    """A read timeout; mid-stream, requests reports one as a ConnectionError wrapping urllib3's ReadTimeoutError."""
    return isinstance(exc, requests.ReadTimeout) or any(
        isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args)


def _drain(chunks: Iterator[bytes]) -> None:
    """Read the rest of the chunked body after [DONE], from the same iterator: a connection left mid-body is
    discarded, and the next request would pay a new TCP connect inside its time to first token."""
    try:
        for _ in chunks:
            pass
    except Exception:  # the answer is complete; a server that then misbehaves costs only the connection
        pass


def run(spec: LoadSpec) -> WorkerResult:
    samples: list[Sample] = []
    started = 0
    endpoints, prompts = itertools.cycle(spec.endpoints), itertools.cycle(spec.prompts)
    t0 = time.perf_counter()
    stopping = False

    class ChatUser(HttpUser):
        host = spec.endpoints[0]
        wait_time = constant(0)  # closed loop: each user sends its next request when the last one ends

        def on_start(self) -> None:
            self.endpoint = next(endpoints)

        @task
        def chat(self) -> None:
            nonlocal started
            if stopping or (spec.max_requests is not None and started >= spec.max_requests):
                gevent.sleep(1)
                return
            started += 1
            sample = _stream(self, spec, self.endpoint, next(prompts), t0)
            samples.append(sample)
            if not sample.ok:
                gevent.sleep(_BACKOFF_S)

    env = Environment(user_classes=[ChatUser], stop_timeout=spec.request_timeout_s + _GRACE_S)
    runner = env.create_local_runner()

    def report_progress() -> None:
        while True:
            gevent.sleep(1)
            done = [s.latency_ms for s in samples if s.ok]
            print("PROGRESS " + json.dumps({
                "elapsed_s": round(time.perf_counter() - t0, 1), "requests": len(samples),
                "failures": sum(1 for s in samples if not s.ok),
                "p95_ms": round(percentile(done, 95), 1) if done else None}), flush=True)

    reporter = gevent.spawn(report_progress)
    runner.start(spec.users, spawn_rate=spec.spawn_rate)
    while time.perf_counter() - t0 < spec.duration_s and not (
            spec.max_requests is not None and len(samples) >= spec.max_requests):
        gevent.sleep(0.1)
    stopping = True
    elapsed = time.perf_counter() - t0
    runner.stop()  # waits up to stop_timeout for requests in flight
    runner.quit()
    reporter.kill()
    # Rates count the requests that started within the test's duration, over that duration.
    return WorkerResult(samples=[s for s in samples if s.start_s <= spec.duration_s], elapsed_s=elapsed)


def main() -> None:
    spec_path, result_path = Path(sys.argv[1]), Path(sys.argv[2])
    spec = LoadSpec.model_validate_json(spec_path.read_text())
    # A hard deadline of our own, beside the CLI's: SIGALRM's default action ends the process.
    signal.alarm(int(spec.duration_s + spec.request_timeout_s + 3 * _GRACE_S + 30))
    result = run(spec)
    result_path.write_text(result.model_dump_json())


if __name__ == "__main__":
    main()
