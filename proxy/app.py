"""The application factory: builds the aiohttp app from Settings; resources open and close in
cleanup contexts so a test server and the real one start the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api import admin, backstage, client, reads
from proxy.api.errors import error_middleware
from proxy.auth import Authenticator
from proxy.clock import Clock
from proxy.config import Settings
from proxy.state import AUTH, CLOCK, INGEST_STATS, REGISTRY, SETTINGS, STORE
from proxy.store import Store
from proxy.store.retention import RetentionPolicy
from proxy.telemetry import IngestStats, build_registry

log = logging.getLogger(__name__)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[STORE]
    await store.open()
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
    # client_max_size is a backstop; handlers enforce max_body_size themselves and answer 413.
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_size + 1)
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[STORE] = Store(settings.database_path, settings.synchronous)
    app[AUTH] = Authenticator(settings)
    app[INGEST_STATS] = IngestStats()
    app[REGISTRY] = build_registry(app[STORE], app[INGEST_STATS])
    app.cleanup_ctx.append(_store_ctx)
    app.add_routes(client.routes())
    app.add_routes(reads.routes())
    app.add_routes(admin.routes())
    app.add_routes(backstage.routes())
    if settings.auth == "tokens" and not app[AUTH].has_tokens:
        log.warning(
            "auth = \"tokens\" but no tokens are configured: every API request will get 403. "
            "Set client_tokens / admin_tokens, or auth = \"open\" for local development."
        )
    return app
