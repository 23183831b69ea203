"""Operational endpoints: health for probes, Prometheus text for scrapers."""

from __future__ import annotations

from aiohttp import web

from proxy.state import REGISTRY
from proxy.telemetry import CONTENT_TYPE, render


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "OK"})


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(body=render(request.app[REGISTRY]), headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/internal-backstage/health", health),
        web.get("/internal-backstage/prometheus", prometheus),
        web.get("/metrics", prometheus),
    ]
