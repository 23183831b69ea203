"""A loopback aiohttp server standing in for Unleash: serves a client features document with an
ETag (304 on a match) and records every request, including metrics the proxy forwards."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from aiohttp import web

UPSTREAM_DEV_TOKEN = "*:development.upstream-dev-secret"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class UpstreamStandIn:
    document: dict
    revision: int = 1
    failing_status: int | None = None  # answer every features request with this status
    stalled: asyncio.Event | None = None  # hold every features request until this is set
    requests: list[Recorded] = field(default_factory=list)

    @property
    def etag(self) -> str:
        return f'"standin:{self.revision}:v1"'

    def publish(self, document: dict) -> None:
        self.document = document
        self.revision += 1

    def seen(self, path_prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    async def _record(self, request: web.Request) -> None:
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), await request.read()))

    async def features(self, request: web.Request) -> web.Response:
        await self._record(request)
        if request.headers.get("Authorization") != UPSTREAM_DEV_TOKEN:
            return web.json_response({"name": "AuthenticationRequired"}, status=401)
        if self.stalled is not None:
            await self.stalled.wait()
        if self.failing_status is not None:
            return web.Response(status=self.failing_status)
        if request.headers.get("If-None-Match") == self.etag:
            return web.Response(status=304, headers={"ETag": self.etag})
        return web.Response(body=json.dumps(self.document), content_type="application/json",
                            headers={"ETag": self.etag})

    async def accept(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=202)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/api/client/features", self.features),
            web.post("/api/client/{tail:.*}", self.accept),
        ])
        return app
