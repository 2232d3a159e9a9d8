"""Test doubles for the gateway's tests: a recording OpenAI-style upstream, and the gateway itself run for a test.

`RecordingUpstream` is a named test double, not a model server: it answers /v1/chat/completions and
/v1/completions with a scripted reply (whole, or streamed in the deltas given), and records every request body it
received, so a test can assert what the gateway sent upstream (a redacted email, the capped max_tokens, the
upstream model name, the hosted API's key). `hung_up` is set when the gateway closed a stream's connection early.

    with RecordingUpstream(reply="Write to bob@example.com") as upstream:
        upstream.base_url          # http://127.0.0.1:PORT/v1
        upstream.bodies[-1]        # the JSON the gateway sent

`running_gateway(spec)` serves `create_app(spec)` with uvicorn in a thread on a free port; `gateway_process(spec)`
runs `python -m llmctl.gateway` as a user (or the local provider) would.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import uvicorn

from scripted_server import DoubleServer

from llmctl.gateway.app import create_app
from llmctl.gateway.spec import GatewaySpec
from providers.local.process import free_port


@dataclass
class RecordingUpstream(DoubleServer):
    reply: str = "hello there"
    deltas: list[str] | None = None  # the streamed pieces; default: the reply word by word
    usage: bool = True  # usage in whole answers, and at the end of a stream when include_usage was asked for
    cached_tokens: int = 0  # of the 11 input tokens, those it says it served from its prompt cache
    finish_reason: bool = True  # the last streamed piece carries finish_reason "stop"
    status: int = 200
    itl_s: float = 0.0  # pause before each streamed piece
    hang: bool = False  # read the request, never answer
    reasoning: str | None = None  # a reasoning model's reasoning_content, before the reply
    hang_up_after_answer: bool = False  # close the connection after each answer, without saying so in a header
    end_after_done_s: float = 0.0  # pause between a stream's [DONE] and the end of its chunked body
    bodies: list[dict[str, Any]] = field(default_factory=list, init=False)
    headers: list[dict[str, str]] = field(default_factory=list, init=False)
    paths: list[str] = field(default_factory=list, init=False)
    hung_up: threading.Event = field(default_factory=threading.Event, init=False)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        self._send_json(handler, 200, {"object": "list", "data": [{"id": "upstream-model", "object": "model"}]})

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers.get("content-length", 0))))
        self.paths.append(handler.path)
        self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        self.bodies.append(body)
        self._answer(handler, body)
        if self.hang_up_after_answer:
            handler.close_connection = True

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if self.hang:
            time.sleep(3600)
            return
        if self.status != 200:
            self._send_json(handler, self.status,
                            {"error": {"message": f"scripted {self.status}", "type": "server_error"}})
            return
        chat = handler.path.endswith("/chat/completions")
        usage: dict[str, Any] = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        if not body.get("stream"):
            message = {"role": "assistant", "content": self.reply,
                       **({"reasoning_content": self.reasoning} if self.reasoning is not None else {})}
            choice = ({"index": 0, "message": message, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": self.reply, "finish_reason": "stop"})
            answer = {"id": "cmpl-1", "object": "chat.completion" if chat else "text_completion", "created": 1,
                      "model": body.get("model"), "choices": [choice]}
            self._send_json(handler, 200, {**answer, **({"usage": usage} if self.usage else {})})
            return
        self._begin_stream(handler)
        deltas = self.deltas if self.deltas is not None else [w + " " for w in self.reply.split(" ")]
        base = {"id": "chunk-1", "object": "chat.completion.chunk" if chat else "text_completion", "created": 1,
                "model": body.get("model")}
        try:
            if chat:
                self._event(handler, {**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                           "finish_reason": None}]})
                for piece in (self.reasoning or "").split(" ") if self.reasoning else ():
                    self._event(handler, {**base, "choices": [{"index": 0, "delta": {"reasoning_content": piece + " "},
                                                               "finish_reason": None}]})
            for number, delta in enumerate(deltas):
                time.sleep(self.itl_s)
                last = self.finish_reason and number == len(deltas) - 1
                choice = {"index": 0, "delta": {"content": delta}} if chat else {"index": 0, "text": delta}
                self._event(handler, {**base, "choices": [{**choice, "finish_reason": "stop" if last else None}]})
            if self.usage and (body.get("stream_options") or {}).get("include_usage"):
                self._event(handler, {**base, "choices": [], "usage": usage})
            self._chunk(handler, "data: [DONE]\n\n")
            time.sleep(self.end_after_done_s)
            self._end_stream(handler)
        except (BrokenPipeError, ConnectionResetError):
            self.hung_up.set()


def dead_url() -> str:
    """An upstream URL nothing listens on: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


@contextmanager
def running_gateway(spec: GatewaySpec) -> Iterator[str]:
    """The gateway for `spec`, served by uvicorn in a thread; yields its base URL (…/v1)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(create_app(spec), log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


class GatewayUrl(str):
    """A gateway's base URL (…/v1), which also knows the pid of the process serving it."""

    pid: int


@contextmanager
def gateway_process(spec: GatewaySpec, spec_path: Path, env: dict[str, str] | None = None) -> Iterator[GatewayUrl]:
    """`python -m llmctl.gateway --port 0` on `spec`, written to `spec_path`; yields its base URL (…/v1)."""
    spec.write(spec_path)
    log_path = spec_path.with_suffix(".log")
    with log_path.open("a") as log:
        process = subprocess.Popen([sys.executable, "-m", "llmctl.gateway", "--spec", str(spec_path), "--port", "0"],
                                   stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), (line, log_path.read_text())
        url = GatewayUrl(line.split("listening on ", 1)[1].strip() + "/v1")
        url.pid = process.pid
        yield url
    finally:
        process.terminate()
        process.wait(20)


def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """check()'s first truthy result, retried until timeout_s: the gateway meters just after the answer leaves."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)
