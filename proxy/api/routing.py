"""How every route is served: each handler inside one wrapper, and no aiohttp middlewares.

The wrapper renders an ApiError as the documented JSON error body and counts the request by route,
method and status. It was a stack of middlewares (HTTP metrics, error body, and on the primary with
workers the forwarded client address), and aiohttp adds a layer of its own to any app that has one:
three to four coroutine layers around every request. Side by side under the ingest benchmark (one
process, 20-toggle posts) that stack cost ~6-10 us of the ~70-80 us of CPU a post takes.

With no middlewares aiohttp would answer an unknown path or method with its own text body, so a
catch-all route, registered last, answers them (404, or 405 naming the allowed methods) instead.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence

from aiohttp import web

from proxy.api.errors import ApiError, ErrorRenderer, method_not_allowed, not_found
from proxy.observability.http_metrics import KNOWN_METHODS, UNMATCHED_ROUTE, HttpStats

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Limit = Callable[[web.Request], None]  # raises an ApiError to refuse the request (api/rate_limits.py)
CATCH_ALL = "/{tail:.*}"


def serve(
    app: web.Application, routes: Iterable[web.RouteDef], stats: HttpStats, *,
    adjust: Callable[[web.Request], web.Request] | None = None, fallback: Handler | None = None,
    divert: Callable[[web.Request], bool] | None = None,
    renderers: Sequence[tuple[str, ErrorRenderer]] = (), limit: Limit | None = None,
    unlimited: Collection[str] = (),
) -> None:
    """Register `routes`, each handler wrapped, then the catch-all: the JSON 404/405, or `fallback`
    (an ingest worker passes everything else to the primary). What goes to `fallback`, and what
    `divert` sends there, is not counted here: the primary answers it and counts it.
    `adjust` rewrites a request before its handler sees it (the primary: a worker's client address).
    `renderers` are (path prefix, renderer) pairs: a route whose path starts with the prefix, and an
    unmatched request whose path does, renders its ApiErrors in that vendor's error body.
    `limit` is asked first about every request the process answers itself, except on the paths in
    `unlimited` (health, readiness, metrics); it raises an ApiError (429) to refuse one."""
    passed = _wrapped(fallback, None, adjust) if fallback is not None else None
    wrapped = []
    for route in routes:
        handler = _wrapped(route.handler, stats, adjust, render=_renderer_for(route.path, renderers),
                           limit=None if route.path in unlimited else limit)
        if divert is not None and passed is not None:
            handler = _diverting(handler, divert, passed)
        wrapped.append(web.RouteDef(route.method, route.path, handler, route.kwargs))
    app.add_routes(wrapped)
    catch_all = passed or _wrapped(_unmatched, stats, adjust, label=UNMATCHED_ROUTE, limit=limit,
                                   pick_render=_by_request_path(renderers) if renderers else None)
    app.router.add_route("*", CATCH_ALL, catch_all)


def _renderer_for(path: str, renderers: Sequence[tuple[str, ErrorRenderer]]) -> ErrorRenderer | None:
    return next((render for prefix, render in renderers if path.startswith(prefix)), None)


def _by_request_path(renderers: Sequence[tuple[str, ErrorRenderer]]) -> Callable[[web.Request], ErrorRenderer | None]:
    def pick(request: web.Request) -> ErrorRenderer | None:
        return _renderer_for(request.path, renderers)

    return pick


def _diverting(handler: Handler, divert: Callable[[web.Request], bool], passed: Handler) -> Handler:
    async def divert_or_serve(request: web.Request) -> web.StreamResponse:
        return await (passed if divert(request) else handler)(request)

    return divert_or_serve


def _wrapped(
    handler: Handler, stats: HttpStats | None, adjust: Callable[[web.Request], web.Request] | None,
    label: str | None = None, render: ErrorRenderer | None = None,
    pick_render: Callable[[web.Request], ErrorRenderer | None] | None = None, limit: Limit | None = None,
) -> Handler:
    """`render`: how the route renders an ApiError (None: ApiError.response()); `pick_render`, for
    the catch-all, chooses it by the request."""

    async def serve_request(request: web.Request) -> web.StreamResponse:
        nonlocal label
        started = time.perf_counter()
        if adjust is not None:
            request = adjust(request)
        status = 500
        try:
            if limit is not None:
                limit(request)
            response = await handler(request)
            status = response.status
            return response
        except ApiError as exc:
            status = exc.status
            chosen = pick_render(request) if pick_render is not None else render
            return exc.response() if chosen is None else chosen(exc)
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if stats is not None:
                if label is None:  # one route per wrapper (HEAD shares its GET's): look it up once
                    # The route's pattern, not the path: ids or junk in paths would make unbounded labels.
                    label = request.match_info.route.resource.canonical
                method = request.method if request.method in KNOWN_METHODS else "other"
                stats.record(label, method, status, time.perf_counter() - started,
                             request.content_length or 0)

    return serve_request


async def _unmatched(request: web.Request) -> web.StreamResponse:
    """No route took the request: 405 when its path is served for other methods, else 404."""
    allowed: set[str] = set()
    catch_all = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not catch_all:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise method_not_allowed(request.method, allowed)
    raise not_found(f"no route for {request.method} {request.path}")
