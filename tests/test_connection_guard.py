"""The connection guard in front of an aiohttp server (proxy/api/connections.py), in-process: which
connection makes room at the limit, the 503 when every connection is busy, the header deadline."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from proxy.api.connections import ConnectionGuard, GuardedSite, default_max_connections
from proxy.observability.connections import ConnectionStats

REQUEST = b"GET /fast HTTP/1.1\r\nHost: proxy\r\n\r\n"
HALF = b"GET /fast HTTP/1.1\r\nHost: proxy\r\n"


class Served:
    def __init__(self, site: GuardedSite, guard: ConnectionGuard, release: asyncio.Event) -> None:
        self.site = site
        self.guard = guard
        self.stats = guard.stats
        self.release = release  # set it to let /slow answer

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.site.port)


@contextlib.asynccontextmanager
async def served(limit: int = 100, header_timeout: float = 30.0, keepalive: float = 30.0) -> AsyncIterator[Served]:
    release = asyncio.Event()

    async def fast(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="slow")

    app = web.Application()
    app.router.add_get("/fast", fast)
    app.router.add_get("/slow", slow)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=keepalive)
    await runner.setup()
    guard = ConnectionGuard(limit, header_timeout, ConnectionStats(), descriptor_limit=1024)
    site = GuardedSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    try:
        yield Served(site, guard, release)
    finally:
        release.set()
        await runner.cleanup()


async def answer(reader: asyncio.StreamReader) -> bytes:
    """The status line of the next answer on a connection (b"" if it was closed instead)."""
    line = await asyncio.wait_for(reader.readline(), 5)
    while line and (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b""):
        pass
    if line:
        await asyncio.wait_for(reader.readexactly(2 if b"200" in line else 0), 5)  # "ok"
    return line.strip()


async def closed(reader: asyncio.StreamReader, within: float = 2.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(65536), within) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


async def settle() -> None:
    await asyncio.sleep(0.1)


async def test_at_the_limit_a_new_connection_closes_the_oldest_that_never_sent_a_whole_request():
    async with served(limit=3) as server:
        used = await server.connect()
        used[1].write(REQUEST)
        assert await answer(used[0]) == b"HTTP/1.1 200 OK"  # then idle, kept alive
        half_first = await server.connect()
        half_first[1].write(HALF)
        half_second = await server.connect()
        half_second[1].write(HALF)
        await settle()
        newcomer = await server.connect()
        newcomer[1].write(REQUEST)
        assert await answer(newcomer[0]) == b"HTTP/1.1 200 OK"
        # The oldest connection never finished a request; the older keep-alive one is spared.
        assert await closed(half_first[0])
        assert not await closed(half_second[0], 0.2) and not await closed(used[0], 0.2)
        # With no such connection left, the oldest idle keep-alive connection makes room.
        half_second[1].write(b"\r\n")
        assert await answer(half_second[0]) == b"HTTP/1.1 200 OK"
        another = await server.connect()
        another[1].write(REQUEST)
        assert await answer(another[0]) == b"HTTP/1.1 200 OK"
        assert await closed(used[0])
        assert server.stats.closed["evicted"] == 2
        assert server.stats.refused.total() == 0
        assert server.stats.open == 3


async def test_with_every_connection_busy_a_new_one_is_answered_503_and_closed():
    async with served(limit=2) as server:
        busy = [await server.connect() for _ in range(2)]
        for _reader, writer in busy:
            writer.write(b"GET /slow HTTP/1.1\r\nHost: proxy\r\n\r\n")
        await settle()
        refused = await server.connect()
        refused[1].write(REQUEST)
        status = await asyncio.wait_for(refused[0].read(65536), 5)
        assert status.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert b"Retry-After: 1\r\n" in status and b"Connection: close\r\n" in status
        assert b'"name":"ServiceUnavailableError"' in status
        assert await closed(refused[0])
        assert server.stats.refused["limit"] == 1
        server.release.set()
        for reader, _writer in busy:
            assert await answer(reader) == b"HTTP/1.1 200 OK"
        again = await server.connect()  # the busy ones are idle now: one makes room
        again[1].write(REQUEST)
        assert await answer(again[0]) == b"HTTP/1.1 200 OK"


async def test_headers_must_be_complete_within_the_header_timeout_but_keep_alive_may_idle_longer():
    async with served(header_timeout=0.3, keepalive=5.0) as server:
        silent = await server.connect()
        half = await server.connect()
        half[1].write(HALF)
        kept = await server.connect()
        kept[1].write(REQUEST)
        assert await answer(kept[0]) == b"HTTP/1.1 200 OK"
        assert await closed(silent[0], 1.0) and await closed(half[0], 1.0)
        await asyncio.sleep(0.5)  # idle after a request, past the header timeout
        kept[1].write(REQUEST)
        assert await answer(kept[0]) == b"HTTP/1.1 200 OK"
        assert server.stats.closed["header_timeout"] == 2
        assert server.stats.open == 1 and server.stats.accepted == 3


async def test_between_requests_incomplete_headers_are_cut_at_the_keep_alive_timeout():
    """After its first request a connection is aiohttp's keep-alive timer's: idle or half-sent, it
    is closed keepalive_timeout after its last answer."""
    async with served(header_timeout=30.0, keepalive=0.5) as server:
        reader, writer = await server.connect()
        writer.write(REQUEST)
        assert await answer(reader) == b"HTTP/1.1 200 OK"
        writer.write(HALF)
        assert await closed(reader, 2.0)


async def test_a_pipelined_or_slow_request_is_not_timed_out_once_its_headers_are_in():
    async with served(header_timeout=0.3) as server:
        reader, writer = await server.connect()
        writer.write(b"GET /slow HTTP/1.1\r\nHost: proxy\r\n\r\n")
        await asyncio.sleep(0.6)  # the handler still runs past the header deadline
        server.release.set()
        assert await answer(reader) == b"HTTP/1.1 200 OK"
        assert server.stats.closed["header_timeout"] == 0


@pytest.mark.parametrize(("soft", "reserved", "expected"), [
    (1024, 0, 1024 - 64 - 128),
    (256, 0, 256 - 64 - 32),
    (256, 100, 64),  # never below a quarter of the limit
    (65536, 0, 16384),  # nor above the ceiling
    (resource.RLIM_INFINITY, 0, 16384),
])
def test_the_default_max_connections_leaves_a_reserve_of_descriptors(soft, reserved, expected):
    assert default_max_connections(soft, reserved) == expected
