"""The original Unleash metrics read API, answered from the local store (admin token, or
auth = "open"). Shapes follow Unleash's old docs/api/metrics-api.md (proxy/unleash/schemas/reads.py).
Answers go through the answer cache (proxy/api/cached_read.py), keyed by route and parsed parameters."""

from __future__ import annotations

from aiohttp import web

from proxy.api.cached_read import cached_answer
from proxy.api.errors import not_found
from proxy.api.params import path_name, query_text
from proxy.api.state import SETTINGS, STORE
from proxy.unleash.api import read_answers
from proxy.unleash.api.admin import require_admin
from proxy.unleash.schemas.reads import ClientApplication


async def feature_toggles(request: web.Request) -> web.Response:
    await require_admin(request)
    store, max_flags = request.app[STORE], request.app[SETTINGS].read_max_flags
    return await cached_answer(request, ("feature-toggles",),
                               lambda now: read_answers.feature_toggles(store, now, max_flags))


async def seen_toggles(request: web.Request) -> web.Response:
    await require_admin(request)
    store, settings = request.app[STORE], request.app[SETTINGS]
    return await cached_answer(request, ("seen-toggles",), lambda now: read_answers.seen_toggles(
        store, now, settings.read_max_flags, settings.read_max_answer_bytes))


async def applications(request: web.Request) -> web.Response:
    await require_admin(request)
    store, strategy = request.app[STORE], query_text(request, "strategyName")
    return await cached_answer(request, ("applications", strategy),
                               lambda now: read_answers.applications(store, now, strategy))


async def application(request: web.Request) -> web.Response:
    await require_admin(request)
    store, name = request.app[STORE], path_name(request, "appName")
    max_flags = request.app[SETTINGS].read_max_flags

    async def compute(_now: float) -> ClientApplication:
        found = await read_answers.application(store, name, max_flags)
        if found is None:
            raise not_found(f"no application named {name!r} has reported to this proxy")
        return found

    return await cached_answer(request, ("application", name), compute)


async def seen_apps(request: web.Request) -> web.Response:
    await require_admin(request)
    store, settings = request.app[STORE], request.app[SETTINGS]
    return await cached_answer(request, ("seen-apps",), lambda _now: read_answers.seen_apps(
        store, settings.read_max_flags, settings.read_max_answer_bytes))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/client/metrics/feature-toggles", feature_toggles),
        web.get("/api/client/seen-toggles", seen_toggles),
        web.get("/api/client/applications", applications),
        web.get("/api/client/applications/{appName}", application),
        web.get("/api/client/seen-apps", seen_apps),
    ]
