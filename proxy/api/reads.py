"""The original Unleash metrics read API, answered from the local store (admin token, or
auth = "open"). Shapes follow Unleash's old docs/api/metrics-api.md."""

from __future__ import annotations

from aiohttp import web

from proxy.api.errors import not_found
from proxy.api.params import path_name, query_text
from proxy.api.render import json_answer
from proxy.auth import TokenKind
from proxy.state import AUTH, CLOCK, STORE
from proxy.store import reads


async def feature_toggles(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    return json_answer(await app[STORE].feature_toggle_windows(app[CLOCK].now()))


async def seen_toggles(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    return json_answer(await reads.seen_toggles(app[STORE], app[CLOCK].now()))


async def applications(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    strategy = query_text(request, "strategyName")
    found = await reads.applications(app[STORE], app[CLOCK].now(), strategy)
    return json_answer({"applications": found})


async def application(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    name = path_name(request, "appName")
    found = await reads.application(app[STORE], name)
    if found is None:
        raise not_found(f"no application named {name!r} has reported to this proxy")
    return json_answer(found)


async def seen_apps(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    return json_answer(await reads.seen_apps(app[STORE]))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/client/metrics/feature-toggles", feature_toggles),
        web.get("/api/client/seen-toggles", seen_toggles),
        web.get("/api/client/applications", applications),
        web.get("/api/client/applications/{appName}", application),
        web.get("/api/client/seen-apps", seen_apps),
    ]
