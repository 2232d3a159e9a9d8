"""A scripted OpenAI-style streaming server: a named test double for misbehaving or precisely timed upstreams.

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["stream", "error500", "json", "malformed", "silent", "no_done", "hang"]


@dataclass
class ScriptedServer:
    mode: Mode = "stream"
    ttft_s: float = 0.05
    itl_s: float = 0.01
    tokens: int = 8
    usage: bool = True
    requests: int = field(default=0, init=False)
    connections: int = field(default=0, init=False)
    _httpd: ThreadingHTTPServer | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:  # once per TCP connection, however many requests it carries
                super().setup()
                script.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                script.requests += 1
                script._answer(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "hang":
            time.sleep(3600)  # connection accepted, request read, never a response (not even headers)
            return
        if self.mode == "error500":
            self._send(handler, 500, "application/json", b'{"error": {"message": "scripted failure"}}')
            return
        if self.mode == "json":
            body = {"choices": [{"message": {"role": "assistant", "content": "hello"}}]}
            self._send(handler, 200, "application/json", json.dumps(body).encode())
            return
        self._begin_stream(handler)
        write = lambda text: self._chunk(handler, text)  # noqa: E731
        try:
            write(_event({"choices": [{"delta": {"role": "assistant"}}]}))
            if self.mode == "silent":
                time.sleep(3600)  # never a token: the client must give up on its own
            if self.mode == "malformed":
                write("data: {not json\n\n")
                return
            time.sleep(self.ttft_s)
            for index in range(self.tokens):
                if index:
                    time.sleep(self.itl_s)
                write(_event({"choices": [{"delta": {"content": f"t{index} "}}]}))
            if self.usage:
                write(_event({"choices": [], "usage": {"completion_tokens": self.tokens}}))
            if self.mode != "no_done":
                write("data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            return
        finally:
            try:
                handler.wfile.write(b"0\r\n\r\n")
                handler.wfile.flush()
            except OSError:
                pass

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", content_type)
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    @staticmethod
    def _begin_stream(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()

    @staticmethod
    def _chunk(handler: BaseHTTPRequestHandler, text: str) -> None:
        data = text.encode()
        handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        handler.wfile.flush()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a sixth simultaneous client wait a second to retry its connect.
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-stream is what these tests do


def _event(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"
