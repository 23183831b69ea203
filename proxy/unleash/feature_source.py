"""Start and stop the source of feature documents: the upstream poller, `features_file`, or neither."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from proxy.api.state import SETTINGS, STORE
from proxy.clock import Clock
from proxy.config import Settings
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.features.file_source import FeatureFileWatcher
from proxy.unleash.state import FEATURE_CACHE, FEATURE_SOURCE
from proxy.unleash.store.features import FeatureDocuments
from proxy.unleash.upstream.features import FeaturePoller
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

FeatureSource = FeaturePoller | FeatureFileWatcher


def cache_for(settings: Settings, clock: Clock) -> FeatureCache:
    if settings.upstream is not None:
        return FeatureCache(sorted(settings.upstream.tokens), clock)
    return FeatureCache(None, clock)


def source_for(settings: Settings, cache: FeatureCache, client: UpstreamClient | None) -> FeatureSource | None:
    if settings.upstream is not None:
        assert client is not None
        return FeaturePoller(settings.upstream, client, cache, settings.features_refresh_interval)
    if settings.features_file:
        watcher = FeatureFileWatcher(Path(settings.features_file), cache, settings.features_refresh_interval)
        # Loaded here, before anything is opened: a bad file stops the start cleanly.
        watcher.load()
        return watcher
    return None


async def features_ctx(app: web.Application) -> AsyncIterator[None]:
    """Runs after the store is open, so stored documents are in service before the first poll."""
    settings, cache, source = app[SETTINGS], app[FEATURE_CACHE], app[FEATURE_SOURCE]
    if app[STORE].writer is None:
        # The database did not open (ready says why): nothing to serve from, nothing to persist.
        yield
        return
    cache.attach(FeatureDocuments(app[STORE]))
    if isinstance(source, FeaturePoller):
        if settings.features_file:
            log.warning("features_file is ignored: features come from the upstream")
        if not source.upstream.tokens:
            log.warning("[upstream] has no tokens: /api/client/features answers 503 for every environment")
    elif source is None:
        log.warning("no upstream and no features_file: /api/client/features serves an empty document")
    task = asyncio.create_task(source.run(), name="feature-source") if source is not None else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
