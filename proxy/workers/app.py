"""The ingest worker's application: the same handlers for the hot ingest routes, committing to the
worker's own journal file; every other request is passed to the primary (passthrough.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.api import body
from proxy.api.connections import CONNECTION_STATS, DescriptorLimit, GuardedSite, connection_guard
from proxy.api.rate_limits import RateLimiter
from proxy.api.routing import serve
from proxy.api.state import CLOCK, INGEST, INGEST_STATS, SETTINGS
from proxy.auth import presented_token
from proxy.clock import Clock
from proxy.config import Settings
from proxy.observability.connections import ConnectionStats
from proxy.observability.http_metrics import HttpStats
from proxy.observability.telemetry import IngestStats
from proxy.observability.worker_stats import stats_path
from proxy.storage.shards.shard_store import ShardStore
from proxy.unleash.api import client
from proxy.unleash.auth import Authenticator
from proxy.unleash.state import AUTH
from proxy.workers.counters_file import SHARD_STORE, WORKER_HTTP_STATS, writer_ctx
from proxy.workers.passthrough import PassThrough, primary_socket_path

log = logging.getLogger(__name__)

# The routes a worker answers itself; bulk is passed on (its Idempotency-Keys live in the primary).
INGEST_ROUTES = frozenset({
    "/api/client/metrics", "/api/frontend/client/metrics", "/api/client/register", "/api/frontend/client/register",
})
SHUTDOWN_SECONDS = 20.0
PASS_THROUGH = web.AppKey("pass_through", PassThrough)


def _unlisted_token(auth: Authenticator):
    """With an upstream, tokens not in the config are validated by the primary (its verdict cache
    and upstream calls stay in one place): a post with such a token is passed on whole."""

    def unlisted(request: web.Request) -> bool:
        token = presented_token(request)
        return bool(token) and not auth.lists(token)

    return unlisted


async def _shard_ctx(app: web.Application) -> AsyncIterator[None]:
    store = app[SHARD_STORE]
    await store.open()
    upkeep = asyncio.create_task(store.run_upkeep(app[SETTINGS].fold_interval), name="shard-upkeep")
    yield
    upkeep.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await upkeep
    await store.close()
    log.info("worker %s stopped; every acknowledged count is in %s", store.name, store.path)


def create_worker_app(settings: Settings, index: int, clock: Clock | None = None) -> web.Application:
    auth = Authenticator(settings)
    pass_through = PassThrough(primary_socket_path(settings.database_path.parent))
    http_stats = HttpStats()
    app = web.Application(**body.app_options(settings.max_body_size))
    app[SETTINGS] = settings
    app[CLOCK] = clock or Clock()
    app[AUTH] = auth
    app[INGEST_STATS] = IngestStats()
    app[SHARD_STORE] = app[INGEST] = ShardStore(
        settings.shard_path(index), settings.database_path, settings.synchronous,
        max_db_size=settings.max_db_size, ingest_processes=settings.workers,
    )
    app[PASS_THROUGH] = pass_through
    app[WORKER_HTTP_STATS] = http_stats
    app[CONNECTION_STATS] = ConnectionStats()
    app.cleanup_ctx.append(_shard_ctx)
    app.cleanup_ctx.append(writer_ctx(stats_path(settings.database_path.parent, index)))
    app.on_cleanup.append(pass_through.close)
    routes = [route for route in client.routes() if route.path in INGEST_ROUTES]
    divert = _unlisted_token(auth) if settings.upstream is not None and settings.auth == "tokens" else None
    limiter = RateLimiter.of(settings, http_stats)
    serve(app, routes, http_stats, fallback=pass_through, divert=divert, limit=limiter.check if limiter else None)
    return app


async def run_worker(app: web.Application, settings: Settings, index: int, descriptors: DescriptorLimit) -> None:
    """Serve until SIGTERM/SIGINT, then finish in-flight requests and commit what is queued."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_SECONDS,
                           keepalive_timeout=settings.keepalive_timeout)
    await runner.setup()
    try:
        guard = connection_guard(settings, app[CONNECTION_STATS], descriptors)
        site = GuardedSite(runner, settings.host, settings.port, guard, reuse_port=True)
        await site.start()
        log.info("worker %d listening on %s:%d (ingest into %s; everything else passed to the primary)",
                 index, settings.host, settings.port, settings.shard_path(index))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
