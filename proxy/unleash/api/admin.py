"""The current Unleash admin read shapes (`/api/admin/metrics/...`, `/api/admin/client-metrics/...`),
answered from the local store; field names and nesting follow Unleash 7.5.1's answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from proxy.api.cached_read import cached_answer
from proxy.api.errors import not_found
from proxy.api.params import path_name, query_choice, query_int, query_text
from proxy.api.state import SETTINGS, STORE
from proxy.unleash.api import admin_answers
from proxy.unleash.auth import TokenKind
from proxy.unleash.state import AUTH
from proxy.unleash.store.admin_reads import SORT_COLUMNS, ApplicationsQuery

MAX_APPLICATIONS_PAGE = 1000
HOURS_BACK_DEFAULT, HOURS_BACK_MAX = 24, 48


async def require_admin(request: web.Request) -> None:
    """401/403 unless the request carries an admin token (or auth = "open"); every read endpoint."""
    await request.app[AUTH].require(request, TokenKind.ADMIN)


async def applications(request: web.Request) -> web.Response:
    await require_admin(request)
    query = ApplicationsQuery(
        query=query_text(request, "query"),
        offset=query_int(request, "offset", 0, minimum=0),
        # Unleash caps the page at 1000 rather than refusing a larger limit.
        limit=min(query_int(request, "limit", MAX_APPLICATIONS_PAGE, minimum=1), MAX_APPLICATIONS_PAGE),
        sort_by=query_choice(request, "sortBy", tuple(SORT_COLUMNS), "appName"),
        sort_order=query_choice(request, "sortOrder", ("asc", "desc"), "asc"),  # type: ignore[arg-type]
    )
    store = request.app[STORE]
    return await cached_answer(request, ("admin-applications", query),
                               lambda _now: admin_answers.applications_page(store, query))


def _one_application(kind: str, read: Callable[[web.Application, str], Awaitable[msgspec.Struct | None]]):
    """A handler answering `read(app, appName)`, or 404 when the app is unknown."""

    async def handler(request: web.Request) -> web.Response:
        await require_admin(request)
        name = path_name(request, "appName")

        async def compute(_now: float) -> msgspec.Struct:
            found = await read(request.app, name)
            if found is None:
                raise not_found(f"no application named {name!r} has registered with this proxy")
            return found

        return await cached_answer(request, (f"admin-{kind}", name), compute)

    return handler


async def _application(app: web.Application, name: str) -> msgspec.Struct | None:
    return await admin_answers.application(app[STORE], name, app[SETTINGS].read_max_flags)


async def _application_overview(app: web.Application, name: str) -> msgspec.Struct | None:
    return await admin_answers.application_overview(app[STORE], name)


async def instances(request: web.Request) -> web.Response:
    await require_admin(request)
    name, environment = path_name(request, "appName"), path_name(request, "environment")
    store = request.app[STORE]
    return await cached_answer(request, ("instances", name, environment),
                               lambda now: admin_answers.instances(store, name, environment, now))


async def raw_usage(request: web.Request) -> web.Response:
    await require_admin(request)
    flag = path_name(request, "name")
    hours_back = query_int(request, "hoursBack", HOURS_BACK_DEFAULT)
    if not 1 <= hours_back <= HOURS_BACK_MAX:
        hours_back = HOURS_BACK_DEFAULT  # out of range falls back to the default, as in Unleash
    store = request.app[STORE]
    return await cached_answer(request, ("raw-usage", flag, hours_back),
                               lambda now: admin_answers.raw_usage(store, flag, hours_back, now))


async def feature_summary(request: web.Request) -> web.Response:
    await require_admin(request)
    store, flag = request.app[STORE], path_name(request, "name")
    return await cached_answer(request, ("feature-summary", flag),
                               lambda now: admin_answers.feature_summary(store, flag, now))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/admin/metrics/applications", applications),
        web.get("/api/admin/metrics/applications/{appName}", _one_application("application", _application)),
        web.get("/api/admin/metrics/applications/{appName}/overview",
                _one_application("overview", _application_overview)),
        web.get("/api/admin/metrics/instances/{appName}/environment/{environment}", instances),
        web.get("/api/admin/client-metrics/features/{name}/raw", raw_usage),
        web.get("/api/admin/client-metrics/features/{name}", feature_summary),
    ]
