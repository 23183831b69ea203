"""Operational endpoints: health and readiness for probes, Prometheus text for scrapers.

Each room adds what it knows: readiness checks (READINESS_CHECKS) and Prometheus families read at
scrape time (SCRAPE_SOURCES)."""

from __future__ import annotations

from aiohttp import web

from proxy.api.openapi import PROMETHEUS_TEXT, Operation
from proxy.api.render import json_answer
from proxy.api.schemas.backstage import Health, Readiness
from proxy.api.state import CLOCK, READINESS_CHECKS, REGISTRY, SCRAPE_SOURCES, STORE
from proxy.observability.exposition import text
from proxy.observability.telemetry import CONTENT_TYPE, render


async def health(request: web.Request) -> web.Response:
    return json_answer(Health())


async def ready(request: web.Request) -> web.Response:
    """200 while a commit to the database works and every room's checks pass; 503 naming why not."""
    error = request.app[STORE].check_writable(request.app[CLOCK].now())
    for check in request.app[READINESS_CHECKS]:
        if error is not None:
            break
        error = check()
    if error is not None:
        return json_answer(Readiness(status="NOT_READY", error=error), status=503)
    return json_answer(Readiness(status="READY"))


async def prometheus(request: web.Request) -> web.Response:
    lines: list[str] = []
    for source in request.app[SCRAPE_SOURCES]:
        lines += await source()
    body = render(request.app[REGISTRY]) + text(lines)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/internal-backstage/health", health),
        web.get("/internal-backstage/ready", ready),
        web.get("/internal-backstage/prometheus", prometheus),
        web.get("/metrics", prometheus),
    ]


OPERATIONS = [
    Operation("get", "/internal-backstage/health", "Liveness", None, answer=Health),
    Operation("get", "/internal-backstage/ready", "Readiness: commits work and feature documents exist",
              None, answer=Readiness, other_answers={503: Readiness}),
    Operation("get", "/internal-backstage/prometheus", "The proxy's metrics, Prometheus text", None,
              answer={"type": "string"}, answer_media=PROMETHEUS_TEXT),
    Operation("get", "/metrics", "The proxy's metrics, Prometheus text (alias)", None,
              answer={"type": "string"}, answer_media=PROMETHEUS_TEXT),
]
