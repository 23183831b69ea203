"""Polls `{upstream}/client/features` for every environment the upstream has a token for.

Conditional requests (`If-None-Match` with the upstream's last ETag) keep a quiet upstream cheap.
Any failure leaves the last good document in service: an SDK at an offline site is better off
with slightly stale definitions than with none.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3

import aiohttp

from proxy import __version__
from proxy.config import UpstreamSettings
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.features.document import InvalidFeatures

log = logging.getLogger(__name__)

CLIENT_SPEC = "5.2.0"


class UpstreamRefused(Exception):
    pass


class FeaturePoller:
    def __init__(self, upstream: UpstreamSettings, cache: FeatureCache, interval: float) -> None:
        self.url = upstream.url.rstrip("/") + "/client/features"
        self.upstream = upstream
        self.cache = cache
        self.interval = interval
        self._session: aiohttp.ClientSession | None = None
        self._locks = {env: asyncio.Lock() for env in upstream.tokens}
        self._failing: set[str] = set()
        self._identity = {
            "UNLEASH-APPNAME": "metrics-proxy",
            "UNLEASH-INSTANCEID": f"metrics-proxy-{socket.gethostname()}",
            "Unleash-Client-Spec": CLIENT_SPEC,
            "User-Agent": f"metrics-proxy/{__version__}",
        }

    async def __aenter__(self) -> FeaturePoller:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.upstream.request_timeout))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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
            except (TimeoutError, aiohttp.ClientError, UpstreamRefused, InvalidFeatures, sqlite3.Error) as exc:
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
        assert self._session is not None, "use the poller as an async context manager"
        headers = {**self.upstream.headers, **self._identity, "Authorization": self.upstream.tokens[environment]}
        current = self.cache.document_for(environment)
        if current is not None and current.upstream_etag:
            headers["If-None-Match"] = current.upstream_etag
        async with self._session.get(self.url, headers=headers) as response:
            if response.status == 304:
                self.cache.confirm(environment)
                return "not_modified"
            if response.status != 200:
                raise UpstreamRefused(f"HTTP {response.status}")
            body = await response.read()
        self.cache.replace(environment, body, response.headers.get("ETag"))
        return "updated"
