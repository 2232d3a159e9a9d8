"""A scripted OpenAI-style streaming server: a named test double for misbehaving or precisely timed upstreams, and
`DoubleServer`, the HTTP plumbing it shares with the other scripted upstreams (the gateway tests' recording double,
the benchmarks' doubles).

It is not a model server. It exists so that tests and benchmarks can give the load tester inputs a real engine
cannot be made to produce on demand: known time to first token and inter-token gaps, HTTP 500s, a JSON (not
streamed) answer, malformed SSE, a stream that never sends a token, or no response at all (`hang`).

    with ScriptedServer(mode="stream", ttft_s=0.2, itl_s=0.02, tokens=20) as server:
        server.base_url  # http://127.0.0.1:PORT/v1
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal, Self

Mode = Literal["stream", "error500", "json", "malformed", "silent", "no_done", "hang"]


@dataclass
class DoubleServer:
    """An HTTP/1.1 server on a free port of 127.0.0.1, served from a thread while the context is open. A subclass
    answers POSTs in `_post` (and GETs in `_get`), writing with the helpers below: a whole JSON answer, or a
    chunked event stream."""

    connections: int = field(default=0, init=False)  # TCP connections accepted, however many requests each carried
    _httpd: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm meeting the
            # client's delayed ACK can hold a write back ~40 ms, which would land in the client's timings.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:  # once per TCP connection
                super().setup()
                double.connections += 1

            def do_GET(self) -> None:
                double._get(self)

            def do_POST(self) -> None:
                double._post(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_error(HTTPStatus.NOT_IMPLEMENTED)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        raise NotImplementedError

    @staticmethod
    def _send_json(handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _begin_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()

    def _event(self, handler: BaseHTTPRequestHandler, payload: dict[str, Any]) -> None:
        self._chunk(handler, f"data: {json.dumps(payload)}\n\n")

    def _chunk(self, handler: BaseHTTPRequestHandler, text: str) -> None:
        """One chunk of the stream, written and flushed (a subclass may time it here)."""
        data = text.encode()
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()

    @staticmethod
    def _end_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()


@dataclass
class ScriptedServer(DoubleServer):
    mode: Mode = "stream"
    ttft_s: float = 0.05
    itl_s: float = 0.01
    tokens: int = 8
    usage: bool = True
    requests: int = field(default=0, init=False)

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        handler.rfile.read(int(handler.headers.get("content-length", 0)))
        self.requests += 1
        self._answer(handler)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "hang":
            time.sleep(3600)  # connection accepted, request read, never a response (not even headers)
            return
        if self.mode == "error500":
            self._send_json(handler, 500, {"error": {"message": "scripted failure"}})
            return
        if self.mode == "json":
            self._send_json(handler, 200, {"choices": [{"message": {"role": "assistant", "content": "hello"}}]})
            return
        self._begin_stream(handler)
        try:
            self._event(handler, {"choices": [{"delta": {"role": "assistant"}}]})
            if self.mode == "silent":
                time.sleep(3600)  # never a token: the client must give up on its own
            if self.mode == "malformed":
                self._chunk(handler, "data: {not json\n\n")
                return
            time.sleep(self.ttft_s)
            for index in range(self.tokens):
                if index:
                    time.sleep(self.itl_s)
                self._event(handler, {"choices": [{"delta": {"content": f"t{index} "}}]})
            if self.usage:
                self._event(handler, {"choices": [], "usage": {"completion_tokens": self.tokens}})
            if self.mode != "no_done":
                self._chunk(handler, "data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            try:
                self._end_stream(handler)
            except OSError:
                pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a sixth simultaneous client wait a second to retry its connect.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-stream is what these tests do
