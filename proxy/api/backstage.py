"""Operational endpoints: health and readiness for probes, Prometheus text for scrapers."""

from __future__ import annotations

from aiohttp import web

from proxy.api.render import json_answer
from proxy.api.schemas.backstage import Health, Readiness
from proxy.observability.exposition import text
from proxy.observability.scrape import store_families
from proxy.observability.telemetry import CONTENT_TYPE, render
from proxy.state import CLOCK, FEATURE_CACHE, REGISTRY, STORE


async def health(request: web.Request) -> web.Response:
    return json_answer(Health())


async def ready(request: web.Request) -> web.Response:
    """200 while a commit to the database works and every configured environment has a feature
    document to serve; 503 naming why not."""
    error = request.app[STORE].check_writable(request.app[CLOCK].now())
    if error is None and not request.app[FEATURE_CACHE].ready():
        error = "no feature definitions yet for every configured environment (upstream not reached)"
    if error is not None:
        return json_answer(Readiness(status="NOT_READY", error=error), status=503)
    return json_answer(Readiness(status="READY"))


async def prometheus(request: web.Request) -> web.Response:
    body = render(request.app[REGISTRY]) + text(await store_families(request.app))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/internal-backstage/health", health),
        web.get("/internal-backstage/ready", ready),
        web.get("/internal-backstage/prometheus", prometheus),
        web.get("/metrics", prometheus),
    ]
