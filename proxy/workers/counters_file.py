"""A worker's side of its counters file: what it writes for the primary's scrape to add
(proxy/observability/worker_stats.py reads them)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from aiohttp import web

from proxy.api.connections import CONNECTION_STATS
from proxy.api.state import INGEST_STATS
from proxy.observability.connections import ConnectionStats
from proxy.observability.http_metrics import HttpStats
from proxy.observability.telemetry import IngestStats
from proxy.observability.worker_stats import WorkerCounters
from proxy.storage.shards.shard_store import ShardStore

log = logging.getLogger(__name__)

WRITE_SECONDS = 1.0
WORKER_HTTP_STATS = web.AppKey("worker_http_stats", HttpStats)
SHARD_STORE = web.AppKey("shard_store", ShardStore)


def snapshot(ingest: IngestStats, http: HttpStats, backlog_waits: int = 0,
             connections: ConnectionStats | None = None) -> WorkerCounters:
    return WorkerCounters(
        ingest_requests=dict(ingest.requests), counts_accepted=ingest.counts_accepted,
        dropped=dict(ingest.dropped), backlog_waits=backlog_waits,
        http_requests=[(*key, n) for key, n in http.requests.items()], http_bytes=dict(http.bytes_in),
        http_durations={route: (list(d.buckets), d.total_seconds) for route, d in http.durations.items()},
        rate_limited=dict(http.rate_limited),
        connections=(connections or ConnectionStats()).counts(),
    )


def write(path: Path, ingest: IngestStats, http: HttpStats, backlog_waits: int = 0,
          connections: ConnectionStats | None = None) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(msgspec.json.encode(snapshot(ingest, http, backlog_waits, connections)))
    os.replace(partial, path)  # a reader sees the old file or the new one, never half of one


def writer_ctx(path: Path):
    """A worker's cleanup context: its counters reach `path` every WRITE_SECONDS and at its stop."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        def write_now() -> None:
            write(path, app[INGEST_STATS], app[WORKER_HTTP_STATS], app[SHARD_STORE].backlog_waits,
                  app[CONNECTION_STATS])

        async def keep_writing() -> None:
            while True:
                await asyncio.sleep(WRITE_SECONDS)
                try:
                    write_now()
                except OSError as exc:
                    log.warning("could not write the worker's counters to %s: %s", path, exc)

        task = asyncio.create_task(keep_writing(), name="worker-counters")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(OSError):
            write_now()

    return ctx
