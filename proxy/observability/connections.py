"""Counters of the TCP connections the proxy holds, refuses and closes (proxy/api/connections.py
keeps them; docs/connections.md explains each reason).

The connection guard bumps plain numbers; ConnectionCollector renders them at scrape time, with the
ingest workers' shares added from their counters files (observability/worker_stats.py).
"""

from __future__ import annotations

import resource
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Why a connection was refused at accept (answered 503 and closed, never handed to the app).
REFUSED_LIMIT = "limit"  # max_connections reached and every connection was busy with a request
REFUSED_DESCRIPTORS = "descriptors"  # accept failed for want of a descriptor; refused with the reserve one
# Why the proxy closed a connection it had accepted.
CLOSED_HEADER_TIMEOUT = "header_timeout"  # no complete request headers within request_header_timeout
CLOSED_EVICTED = "evicted"  # idle, and closed to make room for a new connection


class ConnectionCounts(msgspec.Struct, kw_only=True):
    """One process's connection counters, as an ingest worker writes them for the primary."""

    open: int = 0
    limit: int = 0
    accepted: int = 0
    refused: dict[str, int] = {}
    closed: dict[str, int] = {}
    descriptor_exhaustion: int = 0


@dataclass(slots=True)
class ConnectionStats:
    open: int = 0  # connections handed to the app and not yet closed
    limit: int = 0  # max_connections as enforced (0 until the listener starts)
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)
    descriptor_exhaustion: int = 0  # accept() calls that failed with EMFILE/ENFILE

    def counts(self) -> ConnectionCounts:
        return ConnectionCounts(
            open=self.open, limit=self.limit, accepted=self.accepted, refused=dict(self.refused),
            closed=dict(self.closed), descriptor_exhaustion=self.descriptor_exhaustion,
        )

    def plus(self, others: list[ConnectionCounts]) -> ConnectionStats:
        """These counters and the ingest workers': gauges and counters alike are summed."""
        total = ConnectionStats(
            self.open, self.limit, self.accepted, Counter(self.refused), Counter(self.closed),
            self.descriptor_exhaustion,
        )
        for other in others:
            total.open += other.open
            total.limit += other.limit
            total.accepted += other.accepted
            total.refused.update(other.refused)
            total.closed.update(other.closed)
            total.descriptor_exhaustion += other.descriptor_exhaustion
        return total


class ConnectionCollector(Collector):
    def __init__(self, stats: ConnectionStats, workers: Callable[[], list[ConnectionCounts]] | None = None) -> None:
        self.own_stats = stats
        self.workers = workers

    @property
    def stats(self) -> ConnectionStats:
        return self.own_stats.plus(self.workers()) if self.workers is not None else self.own_stats

    def collect(self):
        stats = self.stats  # once: with workers it reads their files
        yield GaugeMetricFamily(
            "metrics_proxy_open_connections", "TCP connections open on the proxy's port (every process)",
            value=stats.open,
        )
        yield GaugeMetricFamily(
            "metrics_proxy_max_connections", "Connections the proxy holds at most (max_connections, every process)",
            value=stats.limit,
        )
        yield GaugeMetricFamily(
            "metrics_proxy_open_files_limit", "The main process's soft RLIMIT_NOFILE (ingest workers inherit it)",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )
        yield CounterMetricFamily(
            "metrics_proxy_connections_accepted", "TCP connections accepted and handed to the HTTP server",
            value=stats.accepted,
        )
        yield _by_reason(
            "metrics_proxy_connections_refused",
            "Connections answered 503 and closed at accept: limit (max_connections, all busy), "
            "descriptors (accept ran out of file descriptors)",
            stats.refused, (REFUSED_LIMIT, REFUSED_DESCRIPTORS),
        )
        yield _by_reason(
            "metrics_proxy_connections_closed",
            "Connections the proxy closed: header_timeout (request headers incomplete in time), "
            "evicted (idle, closed to make room for a new one)",
            stats.closed, (CLOSED_HEADER_TIMEOUT, CLOSED_EVICTED),
        )
        yield CounterMetricFamily(
            "metrics_proxy_fd_exhaustion",
            "accept() calls that failed for want of a file descriptor (EMFILE/ENFILE)",
            value=stats.descriptor_exhaustion,
        )


def _by_reason(name: str, documentation: str, counts: Mapping[str, int], reasons: tuple[str, ...]) -> CounterMetricFamily:
    """A counter family with a sample for every reason, zero until it happens."""
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason in reasons:
        family.add_metric([reason], counts.get(reason, 0))
    return family
