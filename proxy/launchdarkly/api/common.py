"""What every LaunchDarkly handler does first: check the token (and the beta header), read the
path's keys, read a JSON body within max_body_size."""

from __future__ import annotations

import re
from typing import TypeVar

from aiohttp import web

from proxy.api import body
from proxy.api.errors import unavailable
from proxy.api.state import SETTINGS, STORE
from proxy.launchdarkly.errors import CONFLICT, error, not_found
from proxy.launchdarkly.schemas.common import KEY_PATTERN, MAX_KEY_LENGTH
from proxy.launchdarkly.state import LD_AUTH, LD_REFRESH, LD_WRITES
from proxy.launchdarkly.store import resources
from proxy.launchdarkly.upstream.writes import Write
from proxy.storage import StorageUnavailable

T = TypeVar("T")
_KEY = re.compile(KEY_PATTERN)
DEFAULT_API_VERSION = "20240415"


def authorize(request: web.Request, beta: bool = False) -> None:
    auth = request.app[LD_AUTH]
    auth.check(request)
    if beta:
        auth.check_beta(request)


def key(request: web.Request, name: str) -> str:
    """A project, metric or group key from the path; one no resource could have is a 404."""
    value = request.match_info[name]
    if len(value) > MAX_KEY_LENGTH or not _KEY.match(value):
        raise not_found(f"{name} {value[:60]!r}")
    return value


async def read_json(request: web.Request, schema: type[T]) -> T:
    return await body.read_json(request, schema, request.app[SETTINGS].max_body_size)


def api_version(request: web.Request, beta: bool) -> str:
    """The LD-API-Version a write carries upstream: beta for metric groups, else the caller's (or
    the current dated version)."""
    if beta:
        return "beta"
    given = request.headers.get("LD-API-Version", "").strip()
    return given if given.isdigit() or given == "beta" else DEFAULT_API_VERSION


async def read_body(request: web.Request, schema: type[T]) -> tuple[T, bytes]:
    """The body decoded as `schema`, and its bytes (what goes upstream as it came)."""
    body.check_json_content_type(request)
    raw = await body.read_body(request, request.app[SETTINGS].max_body_size)
    return body.decode(raw, schema), raw


async def perform(request: web.Request, write: Write) -> web.Response:
    """The write, local or through the upstream; the store's refusals as LaunchDarkly's errors."""
    try:
        return await request.app[LD_WRITES].perform(write)
    except resources.Missing as exc:
        raise not_found(str(exc)) from None
    except resources.KeyTaken as exc:
        raise error(409, CONFLICT, f"A resource with the key {str(exc)!r} already exists in this project") from None
    except resources.InUse as exc:
        raise error(409, CONFLICT, f"The metric is used by the metric groups {', '.join(exc.groups)}; "
                                   "remove it from them first") from None
    except StorageUnavailable as exc:
        raise unavailable(f"the store cannot write now: {exc}", 5) from None


async def read(request: web.Request, query, *args):
    """A read query of the room's store package, a closed or broken store as a 503."""
    try:
        return await request.app[STORE].read(query, *args)
    except StorageUnavailable as exc:
        raise unavailable(f"the store cannot read now: {exc}", 5) from None


async def refreshed_on_miss(request: web.Request, project: str) -> bool:
    """With an upstream, a key the local copy does not hold: read the project again (at most every
    few seconds). True when it was, and the lookup is worth repeating."""
    refresher = request.app.get(LD_REFRESH)
    return refresher is not None and await refresher.on_miss(project)


async def known_project(request: web.Request, project: str) -> None:
    """With an upstream, a project asked about for the first time is fetched before the answer
    (and refreshed on the interval from then on)."""
    refresher = request.app.get(LD_REFRESH)
    if refresher is not None:
        await refresher.ensure(project)
