"""The local copy kept in step with LaunchDarkly: every project the proxy was asked about is read
whole from the upstream (every page of its metrics and metric groups) on an interval, and at once
the first time it is asked about. A project with writes waiting in the queue is left as it is:
those writes are newer than what LaunchDarkly holds."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import msgspec

from proxy.clock import Clock
from proxy.launchdarkly.model import groups as group_shapes
from proxy.launchdarkly.model import metrics as metric_shapes
from proxy.launchdarkly.store import queue, resources
from proxy.launchdarkly.upstream.stats import WriteStats
from proxy.launchdarkly.upstream.writes import unreachable
from proxy.storage import StorageUnavailable, Store
from proxy.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

PAGE = 50  # LaunchDarkly's largest page
MISS_REFRESH_INTERVAL = 10.0  # seconds: a GET of an unknown key refreshes its project at most this often
MAX_PAGES = 200  # 10,000 resources of a kind per project: a bound on one refresh


class _Page(msgspec.Struct):
    items: list[msgspec.Raw] = []
    totalCount: int | None = None


class RefreshFailed(Exception):
    def __init__(self, message: str, unreachable: bool) -> None:
        super().__init__(message)
        self.unreachable = unreachable  # no answer, a timeout or a 5xx (not, say, a 404 for the project)


class Refresher:
    def __init__(self, store: Store, client: UpstreamClient, token: str, clock: Clock, interval: float,
                 stats: WriteStats, locks: defaultdict[str, asyncio.Lock] | None = None) -> None:
        self.store = store
        self.client = client
        self.token = token
        self.clock = clock
        self.interval = interval
        self.stats = stats
        self._refreshed: set[str] = set()
        self._tried: dict[str, float] = {}  # project -> when a refresh was last tried (clock seconds)
        # When the last refresh failed (LaunchDarkly unreachable), until one succeeds: reads do not
        # wait on it again within refresh_interval; the background refresh keeps trying.
        self._failed_at: float | None = None
        # A project's refresh and its writes take turns (Writes.locks): a refresh that read
        # LaunchDarkly before a write went through must not overwrite what the write kept.
        self._locks = locks if locks is not None else defaultdict(asyncio.Lock)
        self._task: asyncio.Task | None = None

    def _unreachable(self) -> bool:
        return self._failed_at is not None and self.clock.now() - self._failed_at < self.interval

    async def ensure(self, project: str) -> None:
        """Read the project from LaunchDarkly unless that was done since the start; a failure is
        logged and the local copy answers."""
        if project in self._refreshed or self._unreachable():
            return
        async with self._locks[project]:
            if project in self._refreshed:
                return
            try:
                self.store.write(queue.note_project, project)
            except StorageUnavailable:
                return
            await self.refresh(project)

    async def on_miss(self, project: str) -> bool:
        """A key the local copy does not hold was asked for: read the project again, unless that was
        tried in the last MISS_REFRESH_INTERVAL seconds. True when the local copy was refreshed."""
        if self.clock.now() - self._tried.get(project, float("-inf")) < MISS_REFRESH_INTERVAL or self._unreachable():
            return False
        return await self.refresh_now(project)

    async def refresh_now(self, project: str) -> bool:
        """refresh() in the project's turn."""
        async with self._locks[project]:
            return await self.refresh(project)

    async def refresh(self, project: str) -> bool:
        """Read the project from LaunchDarkly and make it the local copy (the caller holds its turn)."""
        self._tried[project] = self.clock.now()
        try:
            metrics = await self._all(f"/api/v2/metrics/{project}", "20240415")
            groups = await self._all(f"/api/v2/projects/{project}/metric-groups", "beta")
        except RefreshFailed as exc:
            if exc.unreachable:
                self._failed_at = self.clock.now()
            else:  # LaunchDarkly answered (e.g. no such project): reads need not ask again, the interval does
                self._refreshed.add(project)
            self.stats.refreshes["failed"] += 1
            log.warning("refreshing LaunchDarkly project %r failed; the local copy answers: %s", project, exc)
            return False
        metric_rows = []
        for raw in metrics:
            try:
                rep = metric_shapes.decode(raw)
            except msgspec.DecodeError as exc:  # e.g. a kind this proxy does not serve
                log.warning("a metric of project %r from LaunchDarkly is not kept: %s", project, exc)
                continue
            metric_rows.append((rep.key, rep.versionId, metric_shapes.encode(rep)))
        group_rows = []
        for raw in groups:
            try:
                group = group_shapes.decode(raw)
            except msgspec.DecodeError as exc:
                log.warning("a metric group of project %r from LaunchDarkly is not kept: %s", project, exc)
                continue
            group_rows.append((group.key, group_shapes.encode(group), group_shapes.metric_keys(group)))
        try:
            done = self.store.write(resources.replace_project, project, metric_rows, group_rows, self.clock.now())
        except StorageUnavailable as exc:
            self.stats.refreshes["failed"] += 1
            log.warning("keeping LaunchDarkly project %r failed: %s", project, exc)
            return False
        self._refreshed.add(project)
        self._failed_at = None
        self.stats.refreshes["ok" if done else "skipped"] += 1
        return done

    async def _all(self, path: str, version: str) -> list[bytes]:
        found: list[bytes] = []
        for page in range(MAX_PAGES):
            result = await self.client.send("GET", f"{path}?limit={PAGE}&offset={page * PAGE}", self.token,
                                            headers={"LD-API-Version": version})
            if result.status != 200 or result.reply is None:
                raise RefreshFailed(f"GET {path}: {result.error[:200]}", unreachable(result))
            try:
                answer = msgspec.json.decode(result.reply.body, type=_Page)
            except msgspec.DecodeError as exc:
                raise RefreshFailed(f"GET {path}: not a collection ({exc})", False) from None
            found.extend(bytes(item) for item in answer.items)
            total = answer.totalCount if answer.totalCount is not None else len(found)
            if not answer.items or len(found) >= total:
                return found
        return found

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                projects = [name for name, _ in self.store.on_writer(queue.projects)]
            except StorageUnavailable as exc:
                log.warning("reading the LaunchDarkly projects to refresh failed: %s", exc)
                continue
            for project in projects:
                await self.refresh_now(project)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="launchdarkly-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
