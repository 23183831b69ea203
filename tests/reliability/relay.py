"""A loopback pass-through between an edge proxy and its regional proxy.

Every request goes on to the regional unchanged. For bulk posts the relay can delay the regional's
answer (a slow regional) or hold it until released: the regional has committed the batch, the
edge has not heard so. Killing the edge then is the one moment a chain can count twice, so the
chain test creates it on purpose instead of hoping a random kill lands there.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

BULK_PATH = "/api/client/metrics/bulk"
# aiohttp hands the relay a decompressed body, so its Content-Encoding no longer applies.
HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class BulkExchange:
    key: str
    status: int  # the regional's answer


@dataclass
class Relay:
    target: str  # the regional's base URL, e.g. http://127.0.0.1:1234
    max_delay: float = 0.0  # each bulk answer waits uniform(0, max_delay) after the regional answered
    arrivals: list[str] = field(default_factory=list)  # the key of every bulk post, as it arrives
    exchanges: list[BulkExchange] = field(default_factory=list)  # every bulk post the regional answered
    bulk_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    # hold_next(): the next bulk answer waits for `release` once `held` is set
    held: asyncio.Event | None = None
    release: asyncio.Event | None = None
    held_key: str | None = None
    drop_next: bool = False  # the next committed bulk post's connection is reset instead of answered
    _session: aiohttp.ClientSession | None = None

    def hold_next(self) -> None:
        self.held, self.release, self.held_key = asyncio.Event(), asyncio.Event(), None

    def keys_answered(self, key: str) -> list[int]:
        return [x.status for x in self.exchanges if x.key == key]

    def app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        is_bulk = request.method == "POST" and request.path == BULK_PATH
        key = request.headers.get("Idempotency-Key", "")
        if is_bulk:
            self.arrivals.append(key)
            self.bulk_arrived.set()
        # Shielded: when the edge dies mid-request its handler is cancelled, but the regional still
        # answers, and what it answered must be on record.
        status, answer, kept = await asyncio.shield(
            self._exchange(request.method, request.path_qs, body, headers, key if is_bulk else None)
        )
        if is_bulk:
            if self.drop_next and 200 <= status < 300:
                self.drop_next = False
                assert request.transport is not None
                request.transport.close()  # the edge cannot know the regional committed it
                return web.Response(status=599)
            if self.held is not None and not self.held.is_set() and 200 <= status < 300:
                self.held_key = key
                self.held.set()
                assert self.release is not None
                await self.release.wait()
            elif self.max_delay:
                await asyncio.sleep(random.uniform(0, self.max_delay))
        return web.Response(status=status, body=answer, headers=kept)

    async def _exchange(self, method: str, path_qs: str, body: bytes, headers: dict[str, str],
                        bulk_key: str | None) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None
        async with self._session.request(method, self.target + path_qs, data=body, headers=headers) as upstream:
            answer = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "etag", "retry-after")}
        if bulk_key is not None:
            self.exchanges.append(BulkExchange(bulk_key, upstream.status))
        return upstream.status, answer, kept
