"""The Unleash client and frontend ingest API: metrics, register, bulk.

Every handler answers 202 with an empty body only after the request's counts are committed (the
Python SDK treats anything else as a failure and drops its bucket).
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from proxy.api.body import read_json
from proxy.api.errors import bad_data, unavailable
from proxy.api.state import CLOCK, INGEST, INGEST_STATS, SETTINGS
from proxy.storage import JournalEntry, StorageUnavailable
from proxy.storage.idempotency import MAX_KEY_LENGTH, IdempotencyClaim
from proxy.unleash.api.impact import attach_impact
from proxy.unleash.api.ingest import bulk_entries, metrics_entry, registration_entry
from proxy.unleash.auth import TokenKind
from proxy.unleash.schemas.client import BulkMetrics, ClientMetrics, ClientRegistration, FrontendRegistration
from proxy.unleash.schemas.limits import UNLEASH_TEXT_MAX
from proxy.unleash.state import AUTH

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 10


async def _commit(
    request: web.Request, kind: str, entries: list[JournalEntry], claim: IdempotencyClaim | None = None,
    refused_rows: int = 0,
) -> web.Response:
    app = request.app
    try:
        counted = await app[INGEST].append(entries, claim)
    except StorageUnavailable as exc:
        reason = "the local store is full" if exc.disk_full else "the local store cannot write"
        raise unavailable(f"{reason}; nothing was stored, retry later", RETRY_AFTER_SECONDS) from None
    if not counted:
        return web.Response(status=202)  # a repeated Idempotency-Key: counted the first time
    stats = app[INGEST_STATS]
    stats.requests[kind] += 1
    if refused_rows:  # counted once per stored post: not again for a 503'd post resent, nor a replay
        stats.dropped["environment_mismatch"] += refused_rows
    stats.counts_accepted += sum(entry.count_total() for entry in entries)
    return web.Response(status=202)


def _impact(app: web.Application, entries: list[JournalEntry], raw: msgspec.Raw, app_name: str | None,
            environment: str | None, now: float) -> None:
    """Attach the post's impact metrics to its entries, counting what was dropped and why."""
    if not raw:  # the common post carries none: keep the hot path free of this work
        return
    dropped = attach_impact(entries, raw, app_name, environment, now, app[INGEST].impact_guard,
                            app[SETTINGS].impact_metrics_max_series)
    app[INGEST_STATS].dropped.update(+dropped)


def _sdk_headers(request: web.Request) -> tuple[str | None, str | None]:
    """The headers SDKs send beside the body; they stand in for a missing instanceId and sdkVersion,
    so they have those fields' limit (Unleash's varchar(255) columns, docs/limits.md)."""
    found = []
    for name in ("UNLEASH-INSTANCEID", "UNLEASH-SDK"):
        value = request.headers.get(name)
        if value is not None and len(value) > UNLEASH_TEXT_MAX:
            raise bad_data(f"the {name} header must have at most {UNLEASH_TEXT_MAX} characters", name)
        found.append(value)
    return found[0], found[1]


def _metrics_handler(kind: TokenKind):
    counted_as = f"{kind.value}_metrics"

    async def post_metrics(request: web.Request) -> web.Response:
        app = request.app
        caller = await app[AUTH].require(request, kind)
        body = await read_json(request, ClientMetrics, app[SETTINGS].max_body_size)
        now = app[CLOCK].now()
        entries = [metrics_entry(body, caller.environment, now, *_sdk_headers(request), request.remote)]
        _impact(app, entries, body.impactMetrics, body.appName, caller.environment, now)
        return await _commit(request, counted_as, entries)

    return post_metrics


def _register_handler(kind: TokenKind, schema: type[ClientRegistration] | type[FrontendRegistration]):
    counted_as = f"{kind.value}_register"

    async def post_register(request: web.Request) -> web.Response:
        app = request.app
        caller = await app[AUTH].require(request, kind)
        body = await read_json(request, schema, app[SETTINGS].max_body_size)
        entry = registration_entry(body, caller.environment, app[CLOCK].now(), *_sdk_headers(request), request.remote)
        return await _commit(request, counted_as, [entry])

    return post_register


def _idempotency_claim(request: web.Request, environment: str, now: float) -> IdempotencyClaim | None:
    """The `Idempotency-Key` a chained proxy sends with every retry of the same batch."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise bad_data(f"the Idempotency-Key header must have 1 to {MAX_KEY_LENGTH} characters", "Idempotency-Key")
    return IdempotencyClaim(environment, key, now)


async def post_bulk(request: web.Request) -> web.Response:
    app = request.app
    caller = await app[AUTH].require(request, TokenKind.CLIENT)
    now = app[CLOCK].now()
    claim = _idempotency_claim(request, caller.environment, now)
    body = await read_json(request, BulkMetrics, app[SETTINGS].max_body_size)
    environment = None if caller.open_mode else caller.environment
    now = app[CLOCK].now()
    entries, refused = bulk_entries(body, environment, now, request.remote)
    _impact(app, entries, body.impactMetrics, None, environment, now)
    if refused:
        # Unleash drops such rows silently; this proxy counts them (in _commit) and says so.
        log.warning(
            "bulk post: %d metric rows name an environment other than the token's (%s); not stored",
            refused, caller.environment,
        )
    return await _commit(request, "bulk", entries, claim, refused)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/client/metrics", _metrics_handler(TokenKind.CLIENT)),
        web.post("/api/client/register", _register_handler(TokenKind.CLIENT, ClientRegistration)),
        web.post("/api/client/metrics/bulk", post_bulk),
        web.post("/api/frontend/client/metrics", _metrics_handler(TokenKind.FRONTEND)),
        web.post("/api/frontend/client/register", _register_handler(TokenKind.FRONTEND, FrontendRegistration)),
    ]
