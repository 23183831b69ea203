"""The Unleash client features API: flag definitions for SDKs, answered from the feature cache.

Every answer carries an ETag; a matching If-None-Match gets an empty 304, so SDKs polling every
few seconds cost a lookup of an already rendered view.
"""

from __future__ import annotations

from aiohttp import web

from proxy.api.errors import bad_data, not_found, unavailable
from proxy.auth import presented_token
from proxy.unleash.auth import (
    DEFAULT_ENVIRONMENT,
    Caller,
    TokenKind,
    environment_of,
    projects_of,
)
from proxy.unleash.features.document import FeatureDocument, FeatureFilter, Rendered
from proxy.unleash.state import AUTH, FEATURE_CACHE

RETRY_AFTER_SECONDS = 10


def _environment(caller: Caller, token: str) -> str:
    # With auth = "open" the caller is anonymous, but an SDK's token still says which environment it wants.
    if caller.open_mode:
        return environment_of(token) if token else DEFAULT_ENVIRONMENT
    return caller.environment


def _filter(request: web.Request, token: str) -> FeatureFilter:
    query = request.query
    tags = []
    for tag in query.getall("tag", []):
        kind, sep, value = tag.partition(":")
        if not sep or not kind or not value:
            raise bad_data(f"tag {tag!r} is not in the format type:value", "tag")
        tags.append((kind, value))
    return FeatureFilter(
        token_projects=projects_of(token) if token else None,
        projects=tuple(p for p in query.getall("project", []) if p),
        name_prefix=query.get("namePrefix") or None,
        tags=tuple(tags),
    )


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def _answer(request: web.Request, rendered: Rendered) -> web.Response:
    headers = {"ETag": rendered.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if _matches(request.headers.get("If-None-Match"), rendered.etag):
        return web.Response(status=304, headers=headers)
    if rendered.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", "").lower():
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=rendered.gzipped, content_type="application/json", headers=headers)
    return web.Response(body=rendered.body, content_type="application/json", headers=headers)


async def _resolve(request: web.Request) -> tuple[FeatureDocument, FeatureFilter, str]:
    caller = await request.app[AUTH].require(request, TokenKind.CLIENT)
    token = presented_token(request)
    environment = _environment(caller, token)
    document = request.app[FEATURE_CACHE].document_for(environment)
    if document is None:
        raise unavailable(
            f"no feature definitions for environment {environment!r} yet; retry later", RETRY_AFTER_SECONDS
        )
    return document, _filter(request, token), environment


async def get_features(request: web.Request) -> web.Response:
    document, selection, environment = await _resolve(request)
    return _answer(request, document.render(selection, environment))


async def get_feature(request: web.Request) -> web.Response:
    document, selection, _ = await _resolve(request)
    name = request.match_info["name"]
    rendered = document.feature(name, selection)
    if rendered is None:
        raise not_found(f"Could not find feature flag {name!r}")
    return _answer(request, rendered)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/client/features", get_features),
        web.get("/api/client/features/{name}", get_feature),
    ]
