"""Ingest workers' own counters (`workers` > 1), so that the primary's scrape counts every process.

A worker writes its ingest and HTTP counters to `<data_dir>/ingest-<k>.stats` every second and as it
stops, replacing the file whole; the primary adds the files of its workers at scrape time. The
primary removes old files before it starts its workers, so every counter starts over together when
the primary does; a worker restarted alone starts its share over (Prometheus sees a reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from aiohttp import web

from proxy.observability.http_metrics import HttpStats
from proxy.observability.telemetry import IngestStats
from proxy.state import INGEST_STATS, STORE

log = logging.getLogger(__name__)

WRITE_SECONDS = 1.0
WORKER_HTTP_STATS = web.AppKey("worker_http_stats", HttpStats)


class WorkerCounters(msgspec.Struct, kw_only=True):
    ingest_requests: dict[str, int] = {}
    counts_accepted: int = 0
    dropped: dict[str, int] = {}
    http_requests: list[tuple[str, str, str, int]] = []  # route, method, status, requests
    http_bytes: dict[str, int] = {}
    http_durations: dict[str, tuple[list[int], float]] = {}  # route -> (bucket counts, seconds)
    backlog_waits: int = 0


_decode = msgspec.json.Decoder(WorkerCounters).decode


def stats_path(data_dir: Path, index: int) -> Path:
    return data_dir / f"ingest-{index}.stats"


def snapshot(ingest: IngestStats, http: HttpStats, backlog_waits: int = 0) -> WorkerCounters:
    return WorkerCounters(
        ingest_requests=dict(ingest.requests), counts_accepted=ingest.counts_accepted,
        dropped=dict(ingest.dropped), backlog_waits=backlog_waits,
        http_requests=[(*key, n) for key, n in http.requests.items()], http_bytes=dict(http.bytes_in),
        http_durations={route: (list(d.buckets), d.total_seconds) for route, d in http.durations.items()},
    )


def write(path: Path, ingest: IngestStats, http: HttpStats, backlog_waits: int = 0) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(msgspec.json.encode(snapshot(ingest, http, backlog_waits)))
    os.replace(partial, path)  # a reader sees the old file or the new one, never half of one


def read_all(data_dir: Path, workers: int) -> list[WorkerCounters]:
    found = []
    for index in range(1, workers):
        try:
            found.append(_decode(stats_path(data_dir, index).read_bytes()))
        except (OSError, msgspec.DecodeError):
            continue  # not written yet (worker starting): its counts show from its first write
    return found


def remove_all(data_dir: Path) -> None:
    for path in data_dir.glob("ingest-*.stats*"):
        path.unlink(missing_ok=True)


def writer_ctx(path: Path):
    """A worker's cleanup context: its counters reach `path` every WRITE_SECONDS and at its stop."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        def write_now() -> None:
            # The worker's store is a ShardStore: it counts the posts it held back.
            write(path, app[INGEST_STATS], app[WORKER_HTTP_STATS], app[STORE].backlog_waits)  # type: ignore[attr-defined]

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
