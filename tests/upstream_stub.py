"""A scripted stand-in for Unleash's bulk endpoint, served over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.unleash.auth import environment_of


@dataclass
class Received:
    headers: dict[str, str]
    body: dict
    size: int  # bytes of the JSON body (aiohttp undoes a Content-Encoding before the handler reads it)
    arrived: float  # loop.time()
    status: int = 0  # what the stub answered (0: no answer, e.g. connection dropped)
    wire_size: int = 0  # bytes on the wire (Content-Length), compressed if the body was

    @property
    def key(self) -> str:
        return self.headers["Idempotency-Key"]


Answer = int | tuple[int, dict[str, str]] | Callable[[web.Request, Received], Awaitable[web.StreamResponse | None]]


@dataclass
class StubUpstream:
    """Answers each POST with the next scripted answer, then with `default`."""

    script: list[Answer] = field(default_factory=list)
    default: Answer = 202
    received: list[Received] = field(default_factory=list)
    concurrent: int = 0
    max_concurrent: int = 0
    hold: asyncio.Event | None = None  # when set, every request waits for it before answering
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    custom: list[dict] = field(default_factory=list)  # bodies posted to /client/metrics/custom
    custom_status: int = 202
    # Metric items answered 2xx again under another Idempotency-Key than the first time: what even
    # a deduplicating upstream counts twice (a resend under the same key is not listed).
    resent: list[dict] = field(default_factory=list)
    _took: dict[str, str] = field(default_factory=dict)  # a 2xx'd metric item's JSON -> its key

    def app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_post("/api/client/metrics/bulk", self.handle)
        app.router.add_post("/api/client/metrics/custom", self.handle_custom)
        return app

    async def handle_custom(self, request: web.Request) -> web.Response:
        self.custom.append(await request.json())
        return web.Response(status=self.custom_status)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        rec = Received(dict(request.headers), json.loads(raw), len(raw), asyncio.get_running_loop().time(),
                       wire_size=request.content_length or 0)
        self.received.append(rec)
        self.arrived.set()
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if self.hold is not None:
                await self.hold.wait()
            answer = self.script.pop(0) if self.script else self.default
            if callable(answer):
                response = await answer(request, rec)
                if response is None:  # the answer dropped the connection; rec.status stays 0
                    return web.Response(status=599)
                self._answered(rec, response.status)
                return response
            status, headers = answer if isinstance(answer, tuple) else (answer, {})
            self._answered(rec, status)
            return web.Response(status=status, headers=headers)
        finally:
            self.concurrent -= 1

    def _answered(self, rec: Received, status: int) -> None:
        rec.status = status
        if not 200 <= status < 300:
            return
        for metric in rec.body["metrics"]:
            content = json.dumps(metric, sort_keys=True)
            if self._took.setdefault(content, rec.key) != rec.key:
                self.resent.append(metric)

    def delivered(self) -> list[Received]:
        return [r for r in self.received if 200 <= r.status < 300]

    def delivered_totals(self) -> Counter:
        """(environment, app, flag, timestamp) -> [yes, no] summed over every 2xx body."""
        totals: Counter = Counter()
        for rec in self.delivered():
            for m in rec.body["metrics"]:
                key = (m["environment"], m["appName"], m["featureName"], m["timestamp"])
                totals[key + ("yes",)] += m["yes"]
                totals[key + ("no",)] += m["no"]
        return +totals


async def drop_connection(request: web.Request, rec: Received) -> None:
    """Read the whole body, then reset: the sender cannot know whether it was applied."""
    request.transport.close()
    return None


def token_environment(rec: Received) -> str:
    return environment_of(rec.headers["Authorization"])
