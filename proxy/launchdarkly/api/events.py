"""The SDK event routes (Relay's paths) and the metric import route.

Unlike Relay, the body is read and validated before the answer, and the 202 goes out only once the
payload is committed to SQLite through the same group commit as Unleash ingest (the journal
entry carries the summary counts and the payload itself). A repeated X-LaunchDarkly-Payload-ID
from the same credential within idempotency_window is answered 202 and stored once. Errors are
Relay's `{"message": ...}`.
"""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from proxy.api import body
from proxy.api.errors import ApiError, unavailable
from proxy.api.state import CLOCK, INGEST, SETTINGS
from proxy.launchdarkly.credentials import BROWSER, IMPORT, MOBILE, SERVER, Credential, refused
from proxy.launchdarkly.model import events as event_model
from proxy.launchdarkly.model.payload import VENDOR, PayloadMeta, encode
from proxy.launchdarkly.schemas.common import KEY_PATTERN, MAX_KEY_LENGTH
from proxy.launchdarkly.schemas.events import RelayError
from proxy.launchdarkly.state import LD_AUTH, LD_CREDENTIALS, LD_EVENT_STATS
from proxy.storage import JournalEntry, StorageUnavailable
from proxy.storage.idempotency import MAX_KEY_LENGTH as MAX_PAYLOAD_ID
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import VendorPayload

RETRY_AFTER_SECONDS = 10
SCHEMA_HEADER = "X-LaunchDarkly-Event-Schema"
TAGS_HEADER = "X-LaunchDarkly-Tags"
PAYLOAD_ID_HEADER = "X-LaunchDarkly-Payload-ID"
MAX_HEADER_TEXT = 1024
# Relay's CORS answer on the browser routes: any origin (echoed), its header list, credentials.
CORS_ALLOWED_HEADERS = ("Cache-Control,Content-Type,Content-Length,Accept-Encoding,X-LaunchDarkly-User-Agent,"
                        "X-LaunchDarkly-Payload-ID,X-LaunchDarkly-Wrapper,X-LaunchDarkly-Event-Schema,"
                        "X-LaunchDarkly-Tags")
CORS_MAX_AGE = "300"
_encode = msgspec.json.Encoder().encode
_KEY = re.compile(KEY_PATTERN)

# Inbound path -> (credential kind, upstream path, diagnostic). Mobile analytics all go to /mobile
# upstream, as Relay sends them; each platform keeps its own path (LaunchDarkly counts usage by it).
SERVER_ROUTES = {"/bulk": "/bulk", "/diagnostic": "/diagnostic"}
MOBILE_ROUTES = {"/mobile": "/mobile", "/mobile/events": "/mobile", "/mobile/events/bulk": "/mobile",
                 "/mobile/events/diagnostic": "/mobile/events/diagnostic"}
BROWSER_BULK = "/events/bulk/{clientSideId}"
BROWSER_DIAGNOSTIC = "/events/diagnostic/{clientSideId}"
IMPORT_PATH = "/v2/event-data-import/{projectKey}/{environmentKey}"
ERROR_PREFIXES = ("/bulk", "/diagnostic", "/mobile", "/events/", "/v2/event-data-import/")


def render(exc: ApiError) -> web.Response:
    """Relay's error body for every error of these paths (the shared reader's 400/413/415 too)."""
    message = exc.details[0].message if exc.details and exc.status == 400 else exc.message
    response = web.Response(status=exc.status, body=_encode(RelayError(message=message)),
                            content_type="application/json", headers=exc.headers)
    if exc.close:
        response.force_close()
    return response


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _header(request: web.Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value[:MAX_HEADER_TEXT] if value else None


async def _accept(request: web.Request, credential: Credential, upstream_path: str, diagnostic: bool = False,
                  imported: bool = False) -> web.Response:
    app = request.app
    stats = app[LD_EVENT_STATS]
    raw = await body.read_body(request, app[SETTINGS].max_body_size)
    now = app[CLOCK].now()
    counts = []
    try:
        if diagnostic:
            event_model.parse_diagnostic(raw)
            events = 1
        elif imported:
            events = event_model.parse_imports(raw)
        else:
            parsed = event_model.parse_events(raw)
            events = len(parsed)
            counts = event_model.summary_counts(parsed, credential.environment, now)
    except event_model.BadEvents as exc:
        stats.refused[credential.kind] += 1
        raise _bad(str(exc)) from None
    if not events:
        return web.Response(status=202)  # an empty array: nothing to keep
    payload_id = _header(request, PAYLOAD_ID_HEADER)
    meta = PayloadMeta(path=upstream_path, environment=credential.environment, kind=credential.kind,
                       project=credential.project, received=now, diagnostic=diagnostic,
                       schema=_header(request, SCHEMA_HEADER), tags=_header(request, TAGS_HEADER),
                       user_agent=_header(request, "User-Agent"), payload_id=payload_id, key=credential.key)
    entry = JournalEntry(environment=credential.environment, received=now, counts=counts,
                         payloads=[VendorPayload(VENDOR, credential.stream, encode(meta), raw)])
    claim = None
    if payload_id and len(payload_id) <= MAX_PAYLOAD_ID:
        claim = IdempotencyClaim(credential.scope, payload_id, now, app[SETTINGS].launchdarkly.payload_id_window)
    try:
        stored = await app[INGEST].append([entry], claim)
    except StorageUnavailable as exc:
        reason = "the local store is full" if exc.disk_full else "the local store cannot write"
        raise unavailable(f"{reason}; nothing was stored, retry later", RETRY_AFTER_SECONDS) from None
    if not stored:
        stats.duplicates[credential.kind] += 1
        return web.Response(status=202)
    stats.payloads[credential.kind] += 1
    stats.events[credential.kind] += events
    return web.Response(status=202)


def _server(kind: str, upstream_path: str):
    diagnostic = upstream_path.endswith("diagnostic")

    async def handle(request: web.Request) -> web.Response:
        credential = request.app[LD_CREDENTIALS].of_request(request, kind)
        return await _accept(request, credential, upstream_path, diagnostic)

    return handle


def _cors(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin") or "*"
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Allow-Headers"] = CORS_ALLOWED_HEADERS
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Expose-Headers"] = "Date"
    response.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
    return response


def _client_side_id(request: web.Request) -> str:
    value = request.match_info["clientSideId"]
    if not value or len(value) > MAX_KEY_LENGTH:
        raise refused(403, "the client-side ID is not configured for any environment")
    return value


def _browser(diagnostic: bool):
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            client_side_id = _client_side_id(request)
            credential = request.app[LD_CREDENTIALS].of_client_side_id(client_side_id)
            path = f"/events/{'diagnostic' if diagnostic else 'bulk'}/{client_side_id}"
            response = await _accept(request, credential, path, diagnostic)
        except ApiError as exc:
            exc.headers.update(_cors(request, web.Response()).headers)
            raise
        return _cors(request, response)

    return handle


async def preflight(request: web.Request) -> web.StreamResponse:
    return _cors(request, web.Response(status=200, text=""))


async def metric_import(request: web.Request) -> web.Response:
    """A metric import: a REST access token ([launchdarkly] access_tokens), a JSON array of custom events."""
    try:
        request.app[LD_AUTH].check(request)
    except ApiError as exc:
        raise refused(exc.status, exc.message) from None
    keys = []
    for name in ("projectKey", "environmentKey"):
        value = request.match_info[name]
        if len(value) > MAX_KEY_LENGTH or not _KEY.match(value):
            raise ApiError(404, "not_found", f"invalid {name} {value[:60]!r}")
        keys.append(value)
    project, environment = keys
    credential = Credential(environment, IMPORT, project)
    return await _accept(request, credential, f"/v2/event-data-import/{project}/{environment}", imported=True)


def routes() -> list[web.RouteDef]:
    found = [web.post(path, _server(SERVER, upstream)) for path, upstream in SERVER_ROUTES.items()]
    found += [web.post(path, _server(MOBILE, upstream)) for path, upstream in MOBILE_ROUTES.items()]
    found += [web.post(BROWSER_BULK, _browser(False)), web.post(BROWSER_DIAGNOSTIC, _browser(True)),
              web.options(BROWSER_BULK, preflight), web.options(BROWSER_DIAGNOSTIC, preflight),
              web.post(IMPORT_PATH, metric_import)]
    return found


__all__ = ["BROWSER", "ERROR_PREFIXES", "render", "routes"]
