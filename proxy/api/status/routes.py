"""`GET /internal-backstage/status` (the document, admin token) and the page at `/` that shows it.

The page is three static files shipped in the package (`page/`): no build step, nothing loaded
from anywhere but this proxy, so it works on a site without internet. They carry no secret; the
page asks for the admin token and sends it with each read of the document."""

from __future__ import annotations

import hmac
from importlib.resources import files

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.api.openapi import Operation
from proxy.api.render import json_answer
from proxy.api.state import CLOCK, SETTINGS, STORE
from proxy.api.status.document import build
from proxy.api.status.schemas import StatusDocument
from proxy.auth import presented_token

STATUS_PATH = "/internal-backstage/status"
PAGE_FILES = {  # path -> (file in page/, content type)
    "/": ("index.html", "text/html"),
    "/status-page/status.css": ("status.css", "text/css"),
    "/status-page/status.js": ("status.js", "text/javascript"),
}
# The page loads nothing from elsewhere, and may not: a strict policy makes that hold in the browser.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def require_admin(request: web.Request) -> None:
    """401/403 unless an admin token (admin_tokens) is presented; auth = "open" needs none."""
    settings = request.app[SETTINGS]
    if settings.auth == "open":
        return
    token = presented_token(request)
    if not token:
        raise ApiError(401, "AuthenticationRequired", "this endpoint needs an admin token in the Authorization header")
    if not any(hmac.compare_digest(token.encode(), known.encode()) for known in settings.admin_tokens):
        raise ApiError(403, "ForbiddenError", "this endpoint needs an admin token (admin_tokens)")


async def status(request: web.Request) -> web.Response:
    require_admin(request)
    document = await build(request.app, request.app[STORE], request.app[CLOCK].now())
    response = json_answer(document)
    response.headers["Cache-Control"] = "no-store"
    return response


def _page_file(name: str, content_type: str):
    body = files("proxy.api.status").joinpath("page", name).read_bytes()

    async def serve_file(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=PAGE_HEADERS)

    return serve_file


def routes() -> list[web.RouteDef]:
    return [web.get(STATUS_PATH, status)] + [
        web.get(path, _page_file(name, content_type)) for path, (name, content_type) in PAGE_FILES.items()
    ]


OPERATIONS = [
    Operation("get", STATUS_PATH, "The operator status: upstream state, pending, dead letters, store, usage",
              "admin", answer=StatusDocument),
] + [
    Operation("get", path, f"The operator status page: {name}", None, answer={"type": "string"},
              answer_media=content_type)
    for path, (name, content_type) in PAGE_FILES.items()
]
