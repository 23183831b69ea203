"""The application factory: builds the aiohttp app from Settings; resources open and close in
cleanup contexts so a test server and the real one start the same way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from proxy.api import backstage, body, openapi
from proxy.api.answer_cache import AnswerCache
from proxy.api.answer_cache_metrics import AnswerCacheCollector
from proxy.api.connections import CONNECTION_STATS
from proxy.api.rate_limits import RateLimiter
from proxy.api.routing import serve
from proxy.api.state import (
    ANSWER_CACHE,
    CLOCK,
    INGEST,
    INGEST_STATS,
    READINESS_CHECKS,
    REGISTRY,
    SCRAPE_SOURCES,
    SETTINGS,
    STATUS_SOURCES,
    STORE,
)
from proxy.api.status import routes as status_routes
from proxy.clock import Clock
from proxy.config import Settings
from proxy.launchdarkly import room as launchdarkly
from proxy.observability import worker_stats
from proxy.observability.connections import ConnectionCollector, ConnectionStats
from proxy.observability.http_metrics import HttpCollector, HttpStats
from proxy.observability.telemetry import IngestStats, build_registry
from proxy.storage import Store
from proxy.storage.migrations import MigrationError
from proxy.storage.usage.retention import RetentionPolicy
from proxy.unleash import room as unleash
from proxy.workers.passthrough import with_client_address
from proxy.workers.supervisor import workers_ctx

log = logging.getLogger(__name__)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    try:
        await store.open()
    except MigrationError as exc:
        # Keep serving so /internal-backstage/ready can say why; every write answers 503.
        store.open_error = str(exc)
        log.error("database not opened: %s", exc)
        yield
        await store.close()
        return
    folder = asyncio.create_task(store.run_folder(app[SETTINGS].fold_interval), name="journal-folder")
    pruner = asyncio.create_task(
        store.run_pruner(retention_policy(app[SETTINGS]), app[CLOCK].now, app[SETTINGS].prune_interval),
        name="history-pruner",
    )
    key_pruner = asyncio.create_task(store.run_key_pruner(app[CLOCK].now), name="idempotency-key-pruner")
    yield
    for task in (key_pruner, pruner, folder):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await store.close()
    log.info("store closed; every acknowledged count is on disk")


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        settings.retention_hours, settings.minute_retention_minutes, settings.instance_retention_hours,
        forwarding=settings.upstream is not None,
    )


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    # Bodies are read (bounded) and inflated by api/body.py, which answers every 413, 415 and bad stream.
    http_stats = HttpStats()
    app = web.Application(**body.app_options(settings.max_body_size))
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[STORE] = app[INGEST] = Store(
        settings.database_path, settings.synchronous, max_db_size=settings.max_db_size,
        overflow_policy=settings.overflow_policy, idempotency_window=settings.idempotency_window,
        ingest_processes=settings.workers, forwarding=settings.upstream is not None,
        disk_reserve=settings.disk_reserve_bytes,
    )
    app[ANSWER_CACHE] = AnswerCache(settings.read_cache_max_bytes, settings.read_cache_max_entries)
    app[INGEST_STATS] = IngestStats()
    app[READINESS_CHECKS] = []
    app[SCRAPE_SOURCES] = []
    app[STATUS_SOURCES] = []
    workers = None
    if settings.workers > 1:  # the scrape adds the ingest workers' own counters
        data_dir = settings.database_path.parent
        workers = functools.partial(worker_stats.read_all, data_dir, settings.workers)
    app[REGISTRY] = build_registry(app[STORE], app[INGEST_STATS], workers)
    app[REGISTRY].register(HttpCollector(http_stats, workers))
    app[REGISTRY].register(AnswerCacheCollector(app[ANSWER_CACHE]))
    # Filled by the connection guard of `serve` (proxy/api/connections.py); zeros under a test server.
    app[CONNECTION_STATS] = ConnectionStats()
    worker_connections = (lambda: [w.connections for w in workers()]) if workers is not None else None
    app[REGISTRY].register(ConnectionCollector(app[CONNECTION_STATS], worker_connections))
    app.cleanup_ctx.append(_store_ctx)
    routes = backstage.routes() + status_routes.routes() + unleash.install(app) + launchdarkly.install(app)
    routes.append(openapi.install(app, openapi_document(tokens=settings.auth == "tokens")))
    limiter = RateLimiter.of(settings, http_stats)
    serve(app, routes, http_stats, adjust=with_client_address if settings.workers > 1 else None,
          renderers=launchdarkly.ERROR_RENDERERS, limit=limiter.check if limiter else None,
          unlimited={r.path for r in backstage.routes()})
    if settings.workers > 1:
        app.cleanup_ctx.append(workers_ctx)  # last: starts after the store opens, stops before it closes
    return app


def openapi_document(tokens: bool = True) -> bytes:
    """/openapi.json of every room; `tokens` False describes auth = "open"."""
    operations = [*unleash.OPERATIONS, *launchdarkly.OPERATIONS, *backstage.OPERATIONS, *status_routes.OPERATIONS,
                  openapi.OPERATION]
    return msgspec.json.encode(openapi.build_document(operations, unleash.RAW_FIELD_TYPES, tokens))
