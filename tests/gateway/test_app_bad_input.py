"""Bad input and bad upstreams: malformed JSON, wrong types, oversized bodies, unknown models and paths, an upstream
that is down, slow, failing or malformed, and a client that hangs up mid-stream. Every refusal is an OpenAI-style
error body; a stream that has begun ends with an error event instead."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripted_server import ScriptedServer

from gateway.upstream import RecordingUpstream, dead_url, eventually, running_gateway
from llmctl.gateway.metering import Ledger
from llmctl.gateway.spec import GatewaySpec, RouteSpec

pytestmark = pytest.mark.timeout(120)  # a hang guard only


def spec(tmp_path: Path, upstream: str, **fields: Any) -> GatewaySpec:
    return GatewaySpec(routes={"assistant": RouteSpec(model="assistant", kind="replicas", upstreams=[upstream],
                                                      upstream_model="m")},
                       db_path=str(tmp_path / "ledger.sqlite"), audit_path=str(tmp_path / "audit.jsonl"), **fields)


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as double:
        yield double


@pytest.fixture
def url(tmp_path: Path, upstream: RecordingUpstream) -> Iterator[str]:
    with running_gateway(spec(tmp_path, upstream.base_url, max_body_bytes=2000)) as base:
        yield base


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the request ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_malformed_json_is_400(url: str, upstream: RecordingUpstream, body: bytes) -> None:
    error = error_of(httpx.post(f"{url}/chat/completions", content=body,
                                headers={"content-type": "application/json"}), 400)
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_json"
    assert upstream.bodies == []


@pytest.mark.parametrize(("fields", "param", "words"), [
    ({"messages": "hello"}, "messages", "must be a list of messages, not a string"),
    ({"messages": {"role": "user"}}, "messages", "must be a list of messages, not an object"),
    ({"messages": ["hi"]}, "messages", "'messages[0]' must be an object"),
    ({"messages": [{"content": "hi"}]}, "messages", "'messages[0].role' must be a string"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages", "'messages[0].content' must be a string or"),
    ({"messages": []}, "messages", "must not be empty"),
    ({"stream": "yes"}, "stream", "'stream' must be a boolean, not a string"),
    ({"stream": 1}, "stream", "'stream' must be a boolean, not a number"),
    ({"max_tokens": "10"}, "max_tokens", "'max_tokens' must be an integer, not a string"),
    ({"max_tokens": 10.5}, "max_tokens", "'max_tokens' must be an integer, not a number"),
    ({"max_tokens": True}, "max_tokens", "'max_tokens' must be an integer, not a boolean"),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"max_completion_tokens": []}, "max_completion_tokens", "must be an integer"),
    ({"model": 7}, "model", "'model' is required"),
    ({"stream_options": True}, "stream_options", "must be an object"),
    ({"prompt_variables": {"x": "1"}}, "prompt_variables", "has no prompt template"),
])
def test_wrong_types_are_400_naming_the_field(url: str, upstream: RecordingUpstream, fields: dict[str, Any],
                                              param: str, words: str) -> None:
    body = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], **fields}
    error = error_of(httpx.post(f"{url}/chat/completions", json=body), 400)
    assert error["param"] == param and words in error["message"]
    assert upstream.bodies == []


def test_missing_messages_and_prompt(url: str) -> None:
    assert error_of(httpx.post(f"{url}/chat/completions", json={"model": "assistant"}), 400)["param"] == "messages"
    error = error_of(httpx.post(f"{url}/completions", json={"model": "assistant", "prompt": [1, 2]}), 400)
    assert error["param"] == "prompt" and "a string or a list of strings" in error["message"]


def test_body_over_the_limit_is_413_declared_or_counted(url: str, upstream: RecordingUpstream) -> None:
    big = {"model": "assistant", "messages": [{"role": "user", "content": "x" * 3000}]}
    declared = httpx.post(f"{url}/chat/completions", json=big)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the gateway must count what arrives
        data = json.dumps(big).encode()
        for start in range(0, len(data), 500):
            yield data[start:start + 500]

    counted = httpx.post(f"{url}/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    for response in (declared, counted):
        error = error_of(response, 413)
        assert error["code"] == "request_too_large" and "2000 bytes" in error["message"]
    assert upstream.bodies == []
    assert httpx.post(f"{url}/chat/completions", json={"model": "assistant", "messages": [
        {"role": "user", "content": "small"}]}).status_code == 200


def test_unknown_model_path_and_method(url: str) -> None:
    error = error_of(httpx.post(f"{url}/chat/completions", json={"model": "nope", "messages": [
        {"role": "user", "content": "Hi"}]}), 404)
    assert error["code"] == "model_not_found" and "assistant" in error["message"]
    assert error_of(httpx.post(f"{url}/embeddings", json={}), 404)["code"] == "unknown_url"
    not_allowed = httpx.get(f"{url}/chat/completions")
    assert error_of(not_allowed, 405)["message"].startswith("GET /v1/chat/completions")
    assert not_allowed.headers["allow"] == "POST"


# --- the upstream --------------------------------------------------------------------------------------------------


def test_upstream_down_is_502_with_the_reason(tmp_path: Path) -> None:
    down = dead_url()
    with running_gateway(spec(tmp_path, down)) as url:
        whole = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "messages": [
            {"role": "user", "content": "Hi"}]})
        streamed = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
            {"role": "user", "content": "Hi"}]})
    for response in (whole, streamed):
        error = error_of(response, 502)
        assert error["code"] == "upstream_unreachable"
        assert down in error["message"] and "refused" in error["message"].lower()
    assert [line["status"] for line in audit(tmp_path)] == [502, 502]


def test_upstream_slower_than_the_timeout_is_504(tmp_path: Path) -> None:
    with RecordingUpstream(hang=True) as slow, running_gateway(spec(tmp_path, slow.base_url,
                                                                    upstream_timeout_s=0.5)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "messages": [
            {"role": "user", "content": "Hi"}]})
    error = error_of(response, 504)
    assert error["type"] == "upstream_timeout" and "0.5 s" in error["message"]


def test_a_stream_that_stalls_ends_with_a_timeout_event(tmp_path: Path) -> None:
    with ScriptedServer(mode="silent") as silent, running_gateway(spec(tmp_path, silent.base_url,
                                                                       upstream_timeout_s=0.5)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
            {"role": "user", "content": "Hi"}]})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert response.status_code == 200 and events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "upstream_timeout"
    assert eventually(lambda: audit(tmp_path))[0]["status"] == 504


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (503, 502), (400, 400), (422, 422)])
def test_upstream_errors(tmp_path: Path, status: int, expected: int) -> None:
    with RecordingUpstream(status=status) as failing, running_gateway(spec(tmp_path, failing.base_url)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "messages": [
            {"role": "user", "content": "Hi"}]})
    error = error_of(response, expected)
    if expected == 502:  # the gateway's own error, quoting the upstream's
        assert error["type"] == "upstream_error" and f"HTTP {status}: scripted {status}" in error["message"]
    else:  # the upstream's refusal reaches the client as the upstream wrote it
        assert error["message"] == f"scripted {status}"


def test_malformed_upstream_stream_ends_with_an_error_event(tmp_path: Path) -> None:
    with ScriptedServer(mode="malformed") as malformed, running_gateway(spec(tmp_path, malformed.base_url)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
            {"role": "user", "content": "Hi"}]})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "upstream_malformed"


def test_a_json_answer_to_a_stream_request_is_502(tmp_path: Path) -> None:
    with ScriptedServer(mode="json") as json_only, running_gateway(spec(tmp_path, json_only.base_url)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
            {"role": "user", "content": "Hi"}]})
    assert error_of(response, 502)["code"] == "upstream_malformed"


def test_an_upstream_stream_without_done_still_ends_properly(tmp_path: Path) -> None:
    with ScriptedServer(mode="no_done", tokens=3, ttft_s=0, itl_s=0) as server, \
            running_gateway(spec(tmp_path, server.base_url)) as url:
        response = httpx.post(f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
            {"role": "user", "content": "Hi"}]})
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]) == "t0 t1 t2 "
    line = eventually(lambda: audit(tmp_path))[0]
    assert (line["status"], line["output_tokens"]) == (200, 3)  # the scripted server's usage


def test_client_disconnect_mid_stream_cancels_upstream_and_meters(tmp_path: Path) -> None:
    with RecordingUpstream(deltas=["tok "] * 500, itl_s=0.02, usage=False) as slow, \
            running_gateway(spec(tmp_path, slow.base_url)) as url:
        received = []
        with httpx.stream("POST", f"{url}/chat/completions", json={"model": "assistant", "stream": True, "messages": [
                {"role": "user", "content": "Count for a long time"}]}) as response:
            for line in response.iter_lines():
                if '"content"' in line:
                    received.append(line)
                if len(received) == 5:
                    break  # leaving the block closes the connection mid-stream
        assert slow.hung_up.wait(10), "the gateway kept the upstream request open"
        line = eventually(lambda: audit(tmp_path))[0]
    assert line["status"] == 499 and "closed the connection" in line["reason"]
    assert 5 <= line["output_tokens"] < 500  # what had been streamed, counted by the estimate (no usage came)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.usage()["models"]["assistant"]["output_tokens"] == line["output_tokens"]
    ledger.close()


def test_the_server_refuses_a_bad_spec_file(tmp_path: Path) -> None:
    missing = subprocess.run([sys.executable, "-m", "llmctl.gateway", "--spec", str(tmp_path / "none.json")],
                             capture_output=True, text=True, timeout=60)
    (tmp_path / "bad.json").write_text('{"routes": {}}')
    invalid = subprocess.run([sys.executable, "-m", "llmctl.gateway", "--spec", str(tmp_path / "bad.json")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr and missing.stdout == ""
    assert invalid.returncode == 2 and "db_path" in invalid.stderr
