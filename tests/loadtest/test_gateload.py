"""The gate's load generator's HTTP client: responses cut anywhere by the network, kept-alive
connections, and a server that hangs up mid-response, against a real loopback server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loadtest.gateload import Client, MalformedResponse, take_response

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"


def test_a_response_is_taken_only_once_whole() -> None:
    buffer = bytearray()
    for at in range(len(OK)):  # the network may cut it anywhere
        buffer[:] = OK[:at]
        assert take_response(buffer) is None
        assert bytes(buffer) == OK[:at]
    buffer[:] = OK + OK[:20]
    assert take_response(buffer) == (200, b'{"ok":true}')
    assert bytes(buffer) == OK[:20]  # the next response's start stays


def test_a_response_without_a_body_or_status_is_told_apart() -> None:
    assert take_response(bytearray(b"HTTP/1.1 204 No Content\r\n\r\n")) == (204, b"")
    with pytest.raises(MalformedResponse, match="not an HTTP response"):
        take_response(bytearray(b"garbage\r\n\r\n"))


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request in three pieces; a request for /hang-up gets half an answer."""
    while head := await reader.readuntil(b"\r\n\r\n"):
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        body = await reader.readexactly(length)
        answer = OK.replace(b"{\"ok\":true}", body[:11].ljust(11))
        if head.startswith(b"POST /hang-up"):
            writer.write(answer[:30])
            await writer.drain()
            writer.close()
            return
        for piece in (answer[:7], answer[7:60], answer[60:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await _serve(reader, writer)
        except asyncio.IncompleteReadError:
            writer.close()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield listening.sockets[0].getsockname()[1]
    listening.close()


async def _post(client: Client, path: str, body: bytes) -> tuple[int, bytes] | BaseException:
    outcome: asyncio.Future[tuple[int, bytes] | BaseException] = (
        asyncio.get_running_loop().create_future())
    client.post(path, body, lambda status, answer: outcome.set_result((status, answer)),
                outcome.set_result)
    return await asyncio.wait_for(outcome, 5)


async def test_calls_share_a_kept_alive_connection(server: int) -> None:
    client = Client("127.0.0.1", server, "key")
    assert await _post(client, "/v1/settlements", b"first call.") == (200, b"first call.")
    assert await _post(client, "/v1/settlements", b"second one.") == (200, b"second one.")
    assert client.opened == 1
    client.close()


async def test_a_server_hanging_up_mid_response_fails_the_call_not_the_next(server: int) -> None:
    client = Client("127.0.0.1", server, "key")
    failed = await _post(client, "/hang-up", b"half of it.")
    assert isinstance(failed, ConnectionResetError), failed
    assert await _post(client, "/v1/settlements", b"after it...") == (200, b"after it...")
    assert client.opened == 2  # the broken connection was never handed out again
    client.close()
