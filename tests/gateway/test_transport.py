"""The gateway's HTTP/1.1 client for its replicas, against raw TCP servers that answer byte for byte as a test
scripts them (well-formed, chunked, cut off, malformed, silent), each on a real socket in the test's event loop."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from llmctl.gateway.transport import UpstreamClient, UpstreamTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LIMITS = httpx.Limits(max_connections=8, max_keepalive_connections=8, keepalive_expiry=4.0)
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


def whole(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


def keep_serving(connections: list[int], *pieces: bytes) -> Handler:
    """A server answering every request on a connection with `pieces`, half a second apart; counts connections."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            for index, piece in enumerate(pieces):
                if index:
                    await asyncio.sleep(0.5)
                writer.write(piece)
                await writer.drain()
    return handler


def run(handler: Handler, scenario: Callable[[httpx.URL, UpstreamClient], Awaitable[None]],
        limits: httpx.Limits = LIMITS, timeout: httpx.Timeout = TIMEOUT) -> None:
    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = UpstreamClient(timeout, limits, UpstreamTransport(limits))
        try:
            await scenario(httpx.URL(f"http://127.0.0.1:{port}/v1/chat/completions"), client)
        finally:
            await client.aclose()
            server.close()
    asyncio.run(main())


def test_requests_reuse_one_kept_alive_connection_and_arrive_whole() -> None:
    connections: list[int] = []
    received: list[tuple[bytes, bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while not reader.at_eof():
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            received.append((head, body))
            writer.write(whole(b'{"n": %d}' % len(received)))
            await writer.drain()

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        for n in (1, 2, 3):
            response = await client.post(url, b'{"q": 1}', {"content-type": "application/json"}, stream=False)
            assert response.status_code == 200 and response.json() == {"n": n}
            assert response.headers["content-type"] == "application/json"

    run(handler, scenario)
    assert len(connections) == 1 and len(received) == 3
    head, body = received[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"\r\nhost: 127.0.0.1:" in head.lower()
    assert body == b'{"q": 1}'


def test_a_chunked_stream_is_handed_on_as_it_arrives() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        writer.write(b"6\r\ndata: \r\n")
        await writer.drain()
        await release.wait()  # the second piece only once the client has the first
        writer.write(b"5\r\nhello\r\n0\r\n\r\n")
        await writer.drain()

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        response = await client.post(url, b"{}", {}, stream=True)
        pieces = response.aiter_raw()
        assert await anext(pieces) == b"data: "
        release.set()
        assert b"".join([part async for part in pieces]) == b"hello"

    run(handler, scenario)


def test_a_body_without_length_ends_when_the_server_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        response = await client.post(url, b"{}", {}, stream=False)
        assert response.content == b"all of it"

    run(handler, scenario)


def test_a_pooled_connection_the_server_closed_while_idle_is_not_reused() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)
        writer.write(whole(b"{}"))  # keep-alive by default in HTTP/1.1, then closes all the same
        await writer.drain()
        writer.close()

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        assert (await client.post(url, b"{}", {}, stream=False)).status_code == 200
        await asyncio.sleep(0.2)  # the server's FIN reaches the idle connection
        assert (await client.post(url, b"{}", {}, stream=False)).status_code == 200

    run(handler, scenario)
    assert len(connections) == 2


def test_a_server_that_hangs_up_without_answering_is_told_apart_from_one_that_breaks_off() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def cut_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await writer.drain()
        writer.close()

    async def nothing_sent(url: httpx.URL, client: UpstreamClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.post(url, b"{}", {}, stream=False)

    async def broken_off(url: httpx.URL, client: UpstreamClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match="in the middle of its answer"):
            await client.post(url, b"{}", {}, stream=False)

    run(silent, nothing_sent)
    run(cut_off, broken_off)


def test_bytes_that_are_not_http_are_a_protocol_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError, match="not valid HTTP/1.1"):
            await client.post(url, b"{}", {}, stream=False)

    run(handler, scenario)


def test_an_upstream_that_never_answers_times_out_on_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(url, b"{}", {}, stream=False)

    run(handler, scenario, timeout=httpx.Timeout(0.3, connect=2.0))


def test_a_refused_connection_is_a_connect_error() -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        client = UpstreamClient(TIMEOUT, LIMITS, UpstreamTransport(LIMITS))
        with pytest.raises(httpx.ConnectError):
            await client.post(httpx.URL(f"http://127.0.0.1:{port}/v1/completions"), b"{}", {}, stream=False)
        await client.aclose()

    asyncio.run(scenario())


def test_a_stream_closed_before_its_end_gives_its_connection_up() -> None:
    connections: list[int] = []
    handler = keep_serving(connections, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n",
                           b"3\r\ntwo\r\n0\r\n\r\n")

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        for _ in range(2):
            response = await client.post(url, b"{}", {}, stream=True)
            assert await anext(response.aiter_raw()) == b"one"
            await response.aclose()  # the client went away: the rest of this answer must not reach the next

    run(handler, scenario)
    assert len(connections) == 2


def test_without_keepalive_every_request_opens_its_own_connection() -> None:
    connections: list[int] = []
    handler = keep_serving(connections, whole(b"{}"))

    async def scenario(url: httpx.URL, client: UpstreamClient) -> None:
        for _ in range(3):
            assert (await client.post(url, b"{}", {}, stream=False)).status_code == 200

    run(handler, scenario, limits=httpx.Limits(max_keepalive_connections=0))
    assert len(connections) == 3


def test_hosted_apis_over_https_are_not_this_transports() -> None:
    async def scenario() -> None:
        transport = UpstreamTransport(LIMITS)
        with pytest.raises(httpx.UnsupportedProtocol):
            await transport.handle_async_request(httpx.Request("POST", "https://api.example.com/v1/x", content=b"{}"))

    asyncio.run(scenario())
