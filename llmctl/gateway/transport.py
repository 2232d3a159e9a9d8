"""How the gateway calls its upstreams: a lean HTTP/1.1 client for plain-http replicas, httpx for hosted APIs.

httpx's client and its default transport (httpcore's pool over anyio streams, h11 parsing in pure Python) spend,
per request, more CPU than everything else the gateway does for a fast local model server, and again for every
streamed chunk. `UpstreamTransport` is an httpx transport that keeps idle HTTP/1.1 connections per upstream, writes a
request's head and body in one send, and parses the answer with httptools (llhttp, the parser uvicorn runs)
straight from asyncio's protocol callbacks. `UpstreamClient` posts to a replica through it without
httpx.AsyncClient's per-request work (cookie jar, auth and redirect flows, event hooks), which a gateway never uses;
hosted APIs (https, perhaps through HTTPS_PROXY) keep httpx's own client. Errors are httpx's (ConnectError,
ReadTimeout, RemoteProtocolError, ...), so callers cannot tell the two apart. What this saves is measured by
`benchmarks/gateway_overhead.py` (and `--compare-transports` against httpx's own transport): re-measure before
changing it.
"""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

# Received body bytes not yet read beyond this pause reading from the socket (a slow client slows the upstream).
_READ_HIGH = 4 * 1024 * 1024
# What httpcore said, which callers match on: the pooled connection was closed by the server as it was reused.
NO_RESPONSE = "Server disconnected without sending a response."


class _Connection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection, one exchange at a time. The parser's callbacks fill in the response;
    `_wake` tells the task waiting for more."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.busy = False  # an exchange is under way: bytes now are its response's
        self.broken: BaseException | None = None  # unusable from now on (closed, spoke out of turn, bad bytes)
        self.closed = False
        self.idle_since = 0.0
        self._reset()
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.until_eof = False  # a body with neither length nor chunks ends when the server closes
        self.keep_alive = True
        self.complete = False
        self.received = False  # any byte of this exchange's response
        self.body: list[bytes] = []
        self.queued = 0

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            self.broken = httpx.RemoteProtocolError("the upstream sent bytes outside an exchange")
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.broken = httpx.RemoteProtocolError(f"the upstream's answer is not valid HTTP/1.1: {exc}")
            self.close()
        if self.queued > _READ_HIGH and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._ended(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # --- httptools callbacks ---

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        names = {name.lower() for name, _ in self.headers}
        chunked = any(n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in self.headers)
        self.until_eof = (b"content-length" not in names and not chunked and self.status not in (204, 304)
                          and self.status >= 200)
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.queued += len(body)

    def on_message_complete(self) -> None:
        self.complete = True

    # --- for the exchange ---

    def _ended(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.busy and not self.complete:
            if self.until_eof and self.head_done:
                self.complete, self.keep_alive = True, False
            elif self.broken is None:
                reason = str(exc) if exc else ""
                self.broken = httpx.RemoteProtocolError(
                    NO_RESPONSE if not self.received else
                    f"the upstream closed the connection in the middle of its answer{': ' + reason if reason else ''}")
        self._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until the parser or the socket has news, at most `timeout` seconds (ReadTimeout)."""
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        except TimeoutError:
            raise httpx.ReadTimeout(f"no data from the upstream for {timeout:g} s") from None
        finally:
            self._waiter = None

    @property
    def alive(self) -> bool:
        return not self.closed and self.broken is None

    async def send(self, data: bytes, timeout: float | None) -> None:
        assert self.transport is not None
        self._reset()
        self.busy = True
        self.transport.write(data)
        if self._drained is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._drained
            except TimeoutError:
                raise httpx.WriteTimeout(f"the upstream took no data for {timeout:g} s") from None
        if self.closed and not self.received:
            raise self.broken or httpx.RemoteProtocolError(NO_RESPONSE)

    def take_body(self) -> bytes:
        data = b"".join(self.body)
        self.body.clear()
        self.queued = 0
        if self.transport is not None and not self.transport.is_reading() and not self.transport.is_closing():
            self.transport.resume_reading()
        return data


class _Body(httpx.AsyncByteStream):
    """A response's body as it arrives; the connection goes back to the pool once the body was read whole."""

    def __init__(self, pool: UpstreamTransport, key: tuple[str, int], connection: _Connection,
                 timeout: float | None) -> None:
        self._pool, self._key, self._connection, self._timeout = pool, key, connection, timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            if connection.body:
                yield connection.take_body()
                continue
            if connection.complete:
                break
            if connection.broken is not None:
                self._finish(reuse=False)
                raise connection.broken
            await connection.wait(self._timeout)
        self._finish(reuse=connection.keep_alive)

    async def aclose(self) -> None:
        self._finish(reuse=False)  # an answer not read to its end leaves bytes on the connection

    def _finish(self, reuse: bool) -> None:
        if not self._done:
            self._done = True
            self._pool.release(self._key, self._connection, reuse)


class UpstreamTransport(httpx.AsyncBaseTransport):
    """httpx transport for plain http:// upstreams: idle connections kept per host and port (at most
    `max_keepalive_connections` in all, for `keepalive_expiry` seconds), at most `max_connections` open at once."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else 1 << 30
        self._expiry = limits.keepalive_expiry if limits.keepalive_expiry is not None else float("inf")
        self._slots = asyncio.Semaphore(limits.max_connections) if limits.max_connections else None
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"this transport serves plain http:// upstreams only, not {url.scheme}")
        timeouts = request.extensions.get("timeout", {})
        key = (url.host, url.port or 80)
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), url.raw_path)]
        head.extend(b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw)
        head.append(b"\r\n")
        data = b"".join([*head, await request.aread()])
        connection = await self._connection(key, timeouts.get("connect"), timeouts.get("pool"))
        try:
            await connection.send(data, timeouts.get("write"))
            while not connection.head_done:
                if connection.broken is not None:
                    raise connection.broken
                await connection.wait(timeouts.get("read"))
        except BaseException:
            self.release(key, connection, reuse=False)
            raise
        return httpx.Response(connection.status, headers=connection.headers, request=request,
                              stream=_Body(self, key, connection, timeouts.get("read")),
                              extensions={"http_version": b"HTTP/1.1"})

    async def _connection(self, key: tuple[str, int], connect: float | None, pool: float | None) -> _Connection:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if connection.alive and now - connection.idle_since < self._expiry:
                return connection
            self._drop(connection)
        if self._slots is not None:
            try:
                async with asyncio.timeout(pool):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout(f"no free connection within {pool:g} s") from None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect):
                _, connection = await loop.create_connection(_Connection, *key)
        except BaseException as exc:
            if self._slots is not None:
                self._slots.release()
            if isinstance(exc, TimeoutError):
                raise httpx.ConnectTimeout(f"no connection within {connect:g} s") from None
            if isinstance(exc, OSError):
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from None
            raise
        self._open.add(connection)
        return connection

    def release(self, key: tuple[str, int], connection: _Connection, reuse: bool) -> None:
        connection.busy = False
        if reuse and connection.alive and sum(map(len, self._idle.values())) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(connection)
            return
        self._drop(connection)

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            if self._slots is not None:
                self._slots.release()

    async def aclose(self) -> None:
        for connection in list(self._open):
            self._drop(connection)
        self._idle.clear()


class UpstreamClient:
    """The gateway's calls to its upstreams: a replica's through `plain` (an UpstreamTransport) directly, a hosted
    API's through httpx's client."""

    def __init__(self, timeout: httpx.Timeout, limits: httpx.Limits, plain: httpx.AsyncBaseTransport) -> None:
        self.timeout = timeout
        self._plain = plain
        self._extensions: dict[str, Any] = {"timeout": timeout.as_dict()}
        self._hosted = httpx.AsyncClient(timeout=timeout, limits=limits)

    async def post(self, url: httpx.URL, body: bytes, headers: dict[str, str], stream: bool) -> httpx.Response:
        """The upstream's response, its body read unless `stream`. Raises httpx's transport errors."""
        if url.scheme != "http":
            return await self._hosted.send(self._hosted.build_request("POST", url, content=body, headers=headers),
                                           stream=stream)
        request = httpx.Request("POST", url, content=body, headers=headers, extensions=self._extensions)
        response = await self._plain.handle_async_request(request)
        if not stream:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        return response

    async def aclose(self) -> None:
        await self._hosted.aclose()
        await self._plain.aclose()
