"""The application factory: builds the aiohttp app from Settings; resources open and close in
cleanup contexts so a test server and the real one start the same way."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api import backstage, openapi
from proxy.api.answer_cache import AnswerCache
from proxy.api.routing import serve
from proxy.auth import Authenticator
from proxy.clock import Clock
from proxy.config import Settings
from proxy.forwarding.stats import ForwarderStats
from proxy.housekeeping import housekeeping_ctx
from proxy.observability import worker_stats
from proxy.observability.http_metrics import HttpCollector, HttpStats
from proxy.observability.read_cache import AnswerCacheCollector
from proxy.observability.telemetry import IngestStats, build_registry
from proxy.state import (
    ANSWER_CACHE,
    AUTH,
    CLOCK,
    FEATURE_CACHE,
    FEATURE_SOURCE,
    FORWARDER,
    FORWARDER_STATS,
    INGEST_STATS,
    REGISTRY,
    SETTINGS,
    STORE,
)
from proxy.storage import Store
from proxy.storage.migrations import MigrationError
from proxy.storage.usage.retention import RetentionPolicy
from proxy.unleash.api import admin, client, custom, features, flush, impact_scrape, reads
from proxy.unleash.features.lifecycle import cache_for, features_ctx, source_for
from proxy.unleash.features.telemetry import FeatureCollector
from proxy.unleash.upstream import forwarder
from proxy.unleash.upstream.token_validation import TokenValidator
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
    yield
    for task in (pruner, folder):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await store.close()
    log.info("store closed; every acknowledged count is on disk")


def retention_policy(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        settings.retention_hours, settings.minute_retention_minutes, settings.instance_retention_hours
    )


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    # client_max_size bounds request.read(), decompressed bytes included; read_body answers its 413.
    http_stats = HttpStats()
    app = web.Application(client_max_size=settings.max_body_size + 1)
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[STORE] = Store(
        settings.database_path, settings.synchronous, max_db_size=settings.max_db_size,
        overflow_policy=settings.overflow_policy, idempotency_window=settings.idempotency_window,
        ingest_processes=settings.workers,
    )
    app[AUTH] = Authenticator(settings)
    app[ANSWER_CACHE] = AnswerCache(settings.read_cache_max_bytes, settings.read_cache_max_entries)
    if settings.upstream is not None and settings.auth == "tokens":
        validator = TokenValidator(
            settings.upstream.url, settings.upstream.request_timeout, settings.token_revalidation_interval,
            app[STORE], app[CLOCK], settings.upstream.headers,
        )
        app[AUTH].validator = validator
        app.on_cleanup.append(validator.close)
    app[INGEST_STATS] = IngestStats()
    app[FORWARDER_STATS] = ForwarderStats()
    workers = None
    if settings.workers > 1:  # the scrape adds the ingest workers' own counters
        data_dir = settings.database_path.parent
        workers = functools.partial(worker_stats.read_all, data_dir, settings.workers)
    app[REGISTRY] = build_registry(app[STORE], app[INGEST_STATS], app[FORWARDER_STATS], workers)
    app[REGISTRY].register(HttpCollector(http_stats, workers))
    app[REGISTRY].register(AnswerCacheCollector(app[ANSWER_CACHE]))
    app.cleanup_ctx.append(_store_ctx)
    if settings.upstream is not None:
        app[FORWARDER] = forwarder.Forwarder(settings, app[STORE], app[CLOCK], app[FORWARDER_STATS])
        app.cleanup_ctx.append(forwarder.cleanup_context(app[FORWARDER]))
    app.cleanup_ctx.append(housekeeping_ctx)  # after the store: stops before it closes
    app[FEATURE_CACHE] = cache_for(settings, app[CLOCK])
    app[FEATURE_SOURCE] = source_for(settings, app[FEATURE_CACHE])
    app[REGISTRY].register(FeatureCollector(app[FEATURE_CACHE]))
    app.cleanup_ctx.append(features_ctx)  # after _store_ctx: it serves the stored documents
    route_groups = (features, client, reads, admin, backstage, flush, custom, impact_scrape)
    routes = [route for group in route_groups for route in group.routes()]
    routes.append(openapi.install(app, tokens=settings.auth == "tokens"))
    serve(app, routes, http_stats, adjust=with_client_address if settings.workers > 1 else None)
    if settings.workers > 1:
        app.cleanup_ctx.append(workers_ctx)  # last: starts after the store opens, stops before it closes
    if settings.auth == "tokens" and not app[AUTH].has_tokens:
        log.warning(
            "auth = \"tokens\" but no tokens are configured: every API request will get 403. "
            "Set client_tokens / admin_tokens, or auth = \"open\" for local development."
        )
    return app
