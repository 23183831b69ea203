"""Polls `{upstream}/client/features` for every environment the upstream has a token for.

Conditional requests (`If-None-Match` with the upstream's last ETag) keep a quiet upstream cheap.
Any failure leaves the last good document in service: an SDK at an offline site is better off
with slightly stale definitions than with none.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from proxy.config import UpstreamSettings
from proxy.storage import StorageUnavailable
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.features.document import InvalidFeatures
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

FEATURES_PATH = "/client/features"


class UpstreamRefused(Exception):
    pass


class FeaturePoller:
    def __init__(self, upstream: UpstreamSettings, client: UpstreamClient, cache: FeatureCache,
                 interval: float) -> None:
        self.client = client
        self.upstream = upstream
        self.cache = cache
        self.interval = interval
        self._locks = {env: asyncio.Lock() for env in upstream.tokens}
        self._failing: set[str] = set()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)

    async def refresh(self) -> None:
        await asyncio.gather(*(self.refresh_environment(env) for env in self.upstream.tokens))

    async def refresh_environment(self, environment: str) -> None:
        async with self._locks[environment]:
            try:
                outcome = await self._fetch(environment)
            except (TimeoutError, aiohttp.ClientError, UpstreamRefused, InvalidFeatures, StorageUnavailable) as exc:
                self.cache.stats.polls[(environment, "failed")] += 1
                if environment not in self._failing:
                    self._failing.add(environment)
                    fallback = ("serving the last good document" if self.cache.document_for(environment)
                                else "no document to serve yet (503)")
                    log.warning("features for %s: upstream fetch failed (%s); %s",
                                environment, str(exc) or type(exc).__name__, fallback)
                return
            self.cache.stats.polls[(environment, outcome)] += 1
            if environment in self._failing:
                self._failing.discard(environment)
                log.info("features for %s: upstream reachable again", environment)

    async def _fetch(self, environment: str) -> str:
        headers = {}
        current = self.cache.document_for(environment)
        if current is not None and current.upstream_etag:
            headers["If-None-Match"] = current.upstream_etag
        reply = await self.client.request("GET", FEATURES_PATH, self.upstream.tokens[environment], headers=headers)
        if reply.status == 304:
            self.cache.confirm(environment)
            return "not_modified"
        if reply.status != 200:
            raise UpstreamRefused(f"HTTP {reply.status}")
        self.cache.replace(environment, reply.body, reply.headers.get("ETag"))
        return "updated"
