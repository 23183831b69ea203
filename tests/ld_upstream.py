"""A LaunchDarkly stand-in on loopback for the write-through and replay tests.

It behaves as the documented API because it is one: a metrics-proxy app with no upstream serves
the metrics and metric-groups API from its own store (beta header required, its access token
required), behind a front that the test can take down (every request 503, or the connection
dropped), that counts what arrives, and that adds LaunchDarkly's rate-limit headers."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import create_app
from proxy.clock import ManualClock
from proxy.config import LaunchDarklySettings, Settings

UPSTREAM_TOKEN = "api-upstream-service-token"
RATE_HEADERS = {"X-Ratelimit-Global-Remaining": "99", "X-Ratelimit-Route-Remaining": "9",
                "X-Ratelimit-Reset": "1700000010000"}


@dataclass
class Arrival:
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    status: int


@dataclass
class LaunchDarklyStandIn:
    backend: TestClient
    server: TestServer | None = None
    down: bool = False  # every request answered 503
    drop: bool = False  # every connection closed without an answer
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)  # scripted answers first
    arrivals: list[Arrival] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every write that reached the backend and was answered 2xx."""
        return [(a.method, a.path) for a in self.arrivals if a.method != "GET" and 200 <= a.status < 300]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "ld-api-version",
                                                                              "content-type")}
        if self.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if self.down:
            self.arrivals.append(Arrival(request.method, request.path, body, headers, 503))
            return web.Response(status=503, text="upstream unavailable")
        if self.answers:
            status, extra = self.answers.pop(0)
            self.arrivals.append(Arrival(request.method, request.path, body, headers, status))
            return web.json_response({"code": "rate_limited", "message": "slow down", "id": "scripted"}, status=status,
                                     headers=extra)
        response = await self.backend.request(request.method, request.path_qs, data=body or None, headers=headers)
        data = await response.read()
        self.arrivals.append(Arrival(request.method, request.path, body, headers, response.status))
        out = web.Response(status=response.status, body=data if data else None, headers=RATE_HEADERS)
        if data:
            out.content_type = "application/json"
        return out


async def start_stand_in(tmp_path, clock: ManualClock) -> LaunchDarklyStandIn:
    settings = Settings(data_dir=str(tmp_path / "launchdarkly-upstream"), fold_interval=3600.0,
                        launchdarkly=LaunchDarklySettings(access_tokens=[UPSTREAM_TOKEN]))
    backend = TestClient(TestServer(create_app(settings, clock=ManualClock(clock.now() - 86400))))
    await backend.start_server()
    stand_in = LaunchDarklyStandIn(backend)
    front = web.Application()
    front.router.add_route("*", "/{tail:.*}", stand_in.handle)
    stand_in.server = TestServer(front, host="127.0.0.1")
    await stand_in.server.start_server()
    return stand_in


async def stop_stand_in(stand_in: LaunchDarklyStandIn) -> None:
    if stand_in.server is not None:
        await stand_in.server.close()
    await stand_in.backend.close()
