"""Read endpoints answered from the local store (admin token, or auth = "open")."""

from __future__ import annotations

from aiohttp import web

from proxy.auth import TokenKind
from proxy.state import AUTH, CLOCK, STORE


async def feature_toggles(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.ADMIN)
    return web.json_response(await app[STORE].feature_toggle_windows(app[CLOCK].now()))


def routes() -> list[web.RouteDef]:
    return [web.get("/api/client/metrics/feature-toggles", feature_toggles)]
