"""`features_file`: a client features document on disk, served without an upstream and reloaded
when it changes (checked every `features_refresh_interval`)."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from proxy.config import ConfigError
from proxy.unleash.features.cache import FeatureCache
from proxy.unleash.features.document import InvalidFeatures

log = logging.getLogger(__name__)


_NOTHING_REJECTED = object()


class FeaturesFileError(ConfigError):
    """A bad features_file at start stops the proxy like any bad option."""


class FeatureFileWatcher:
    def __init__(self, path: Path, cache: FeatureCache, interval: float) -> None:
        self.path = path
        self.cache = cache
        self.interval = interval
        self._signature: tuple[int, int, int] | None = None
        self._rejected: object = _NOTHING_REJECTED

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load(self) -> None:
        """Load the file now; at start a bad file stops the proxy rather than serve nothing."""
        try:
            signature = self._stat()
            self.cache.replace("*", self.path.read_bytes())
        except OSError as exc:
            raise FeaturesFileError(f"features_file {self.path} cannot be read: {exc.strerror}") from None
        except InvalidFeatures as exc:
            raise FeaturesFileError(f"features_file {self.path} is not a client features document: {exc}") from None
        self._signature = signature
        log.info("serving features from %s", self.path)

    async def refresh(self) -> None:
        """Reload if the file changed; a broken or missing file keeps the last good document."""
        try:
            signature = self._stat()
        except OSError as exc:
            signature = None
            problem = f"features_file {self.path} cannot be read: {exc.strerror}"
        else:
            if signature == self._signature:
                self.cache.confirm("*")
                return
            try:
                self.load()
                return
            except FeaturesFileError as exc:
                problem = str(exc)
        if signature != self._rejected:
            log.error("%s; still serving the last good features", problem)
        # Remember the broken version so it is reported once, not every interval.
        self._rejected = signature

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
