"""The LaunchDarkly room wired into the app: its state, its upstream parts (when configured), its
routes, its error body, and what it adds to the Prometheus scrape and /openapi.json.

Called by the app factory after the store's cleanup context is added, so everything here starts
once the store is open and stops before it closes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from aiohttp import web

from proxy import __version__
from proxy.api.errors import ErrorRenderer
from proxy.api.state import CLOCK, SCRAPE_SOURCES, SETTINGS, STATUS_SOURCES, STORE
from proxy.forwarding.delivery import RetryPolicy
from proxy.launchdarkly import errors
from proxy.launchdarkly.api import admin, events, groups, metric_events, metrics, scrape, status
from proxy.launchdarkly.api.openapi_operations import OPERATIONS
from proxy.launchdarkly.auth import AccessTokens
from proxy.launchdarkly.credentials import EventCredentials
from proxy.launchdarkly.state import LD_AUTH, LD_CREDENTIALS, LD_EVENT_STATS, LD_EVENTS, LD_REFRESH, LD_STATS, LD_WRITES
from proxy.launchdarkly.upstream import adopt
from proxy.launchdarkly.upstream import events as event_forwarding
from proxy.launchdarkly.upstream.events import EventForwarder
from proxy.launchdarkly.upstream.refresh import Refresher
from proxy.launchdarkly.upstream.stats import EventStats, WriteStats
from proxy.launchdarkly.upstream.writes import REJECTED, Writes
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

ROUTE_GROUPS = (metric_events, metrics, groups, admin, events)
# Every error of these paths is LaunchDarkly's {code, message, id} (the 404/405 of unknown ones too);
# of the SDK event paths Relay's {"message": ...}.
ERROR_RENDERERS: list[tuple[str, ErrorRenderer]] = [("/api/v2/", errors.render),
                                                     ("/internal-backstage/launchdarkly/", errors.render),
                                                     *((prefix, events.render) for prefix in events.ERROR_PREFIXES)]
WRITE_QUEUE_TICK = 5.0  # seconds between looks at the queue (a drain paused by a 401 resumes here)
__all__ = ["ERROR_RENDERERS", "OPERATIONS", "install"]


def install(app: web.Application) -> list[web.RouteDef]:
    """Set up the LaunchDarkly room in `app`; returns its routes."""
    settings, clock, store = app[SETTINGS], app[CLOCK], app[STORE]
    ld = settings.launchdarkly
    app[LD_AUTH] = AccessTokens(settings)
    app[LD_STATS] = stats = WriteStats()
    app[LD_REFRESH] = None
    if ld.upstream:
        assert ld.api_url is not None and ld.api_token is not None
        client = UpstreamClient(ld.api_url, ld.request_timeout, clock,
                                {"User-Agent": f"metrics-proxy/{__version__}"})
        locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)  # a project's turn
        refresher = app[LD_REFRESH] = Refresher(store, client, ld.api_token, clock, ld.refresh_interval, stats,
                                                locks)
        # One write at a time per project (max_in_flight 1): the queue replays in the order it was taken.
        policy = RetryPolicy(ld.retry_initial, ld.retry_max, ld.auth_retry_interval, max_in_flight=1,
                             rejected=REJECTED)
        app[LD_WRITES] = Writes(store, clock, stats, client, ld.api_token, policy, adopter=adopt.replayed,
                                refresh=refresher.refresh_now, locks=locks)
        app.cleanup_ctx.append(functools.partial(_upstream_ctx, client=client, refresher=refresher))
    else:
        app[LD_WRITES] = Writes(store, clock, stats, adopter=adopt.replayed)
    app[LD_CREDENTIALS] = credentials = EventCredentials(settings)
    app[LD_EVENT_STATS] = event_stats = EventStats()
    events_client = None
    if ld.events:
        assert ld.events_url is not None
        events_client = UpstreamClient(ld.events_url, ld.request_timeout, clock)
    forwarder = app[LD_EVENTS] = EventForwarder(ld, credentials, store, clock, event_stats,
                                                settings.retention_hours, events_client)
    app.cleanup_ctx.append(event_forwarding.cleanup_context(forwarder))
    app[SCRAPE_SOURCES].append(functools.partial(scrape.families, app))
    app[STATUS_SOURCES].append(status.status_source(app))
    if settings.auth == "tokens" and not ld.access_tokens:
        log.info("no [launchdarkly] access_tokens: the LaunchDarkly API answers every call 401")
    return [route for group in ROUTE_GROUPS for route in group.routes()]


async def _upstream_ctx(app: web.Application, client: UpstreamClient, refresher: Refresher) -> AsyncIterator[None]:
    await client.open()
    writes = app[LD_WRITES]
    ticker = None
    if app[STORE].writer is not None:
        writes.start()
        refresher.start()

        async def tick() -> None:
            while True:
                await asyncio.sleep(WRITE_QUEUE_TICK)
                with contextlib.suppress(Exception):
                    writes.tick()

        ticker = asyncio.create_task(tick(), name="launchdarkly-write-queue")
    yield
    if ticker is not None:
        ticker.cancel()
        await asyncio.gather(ticker, return_exceptions=True)
    await refresher.stop()
    await writes.stop()
    await client.close()
