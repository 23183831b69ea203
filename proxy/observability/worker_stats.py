"""Ingest workers' own counters (`workers` > 1), so that the primary's scrape counts every process.

A worker (proxy/workers/counters_file.py) writes its ingest, HTTP and connection counters to `<data_dir>/ingest-<k>.stats` every second and as it
stops, replacing the file whole; the primary adds the files of its workers at scrape time. The
primary removes old files before it starts its workers, so every counter starts over together when
the primary does; a worker restarted alone starts its share over (Prometheus sees a reset).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from proxy.observability.connections import ConnectionCounts


class WorkerCounters(msgspec.Struct, kw_only=True):
    ingest_requests: dict[str, int] = {}
    counts_accepted: int = 0
    dropped: dict[str, int] = {}
    http_requests: list[tuple[str, str, str, int]] = []  # route, method, status, requests
    http_bytes: dict[str, int] = {}
    http_durations: dict[str, tuple[list[int], float]] = {}  # route -> (bucket counts, seconds)
    backlog_waits: int = 0
    rate_limited: dict[str, int] = {}  # requests answered 429, by limit
    connections: ConnectionCounts = msgspec.field(default_factory=ConnectionCounts)


_decode = msgspec.json.Decoder(WorkerCounters).decode


def stats_path(data_dir: Path, index: int) -> Path:
    return data_dir / f"ingest-{index}.stats"


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
