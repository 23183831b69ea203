"""The proxy's own metrics, rendered in Prometheus text format.

Hot-path code only bumps plain integers; a custom collector turns them into metric families at
scrape time, so ingest pays nothing for observability.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from proxy.observability.exposition import cumulative_buckets
from proxy.storage.writer import BATCH_SIZE_BUCKETS, Durations

if TYPE_CHECKING:
    from proxy.forwarding.stats import ForwarderStats
    from proxy.observability.worker_stats import WorkerCounters
    from proxy.storage import Store
    from proxy.storage.capacity.disk_reserve import DiskReserve
    from proxy.storage.capacity.space import BoundedSpace

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class IngestStats:
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint kind
    counts_accepted: int = 0  # yes + no acknowledged
    dropped: Counter[str] = field(default_factory=Counter)  # rows refused, by reason
    backlog_waits: int = 0  # the ingest workers' (ShardStore.backlog_waits); the primary's own is 0

    def plus(self, workers: list[WorkerCounters]) -> IngestStats:
        """These counts and the ingest workers' (observability/worker_stats.py)."""
        total = IngestStats(Counter(self.requests), self.counts_accepted, Counter(self.dropped), self.backlog_waits)
        for counters in workers:
            total.requests.update(counters.ingest_requests)
            total.counts_accepted += counters.counts_accepted
            total.dropped.update(counters.dropped)
            total.backlog_waits += counters.backlog_waits
        return total


WorkersCounters = Callable[[], "list[WorkerCounters]"]


class ProxyCollector(Collector):
    def __init__(self, store: Store, ingest: IngestStats, workers: WorkersCounters | None = None) -> None:
        self.store = store
        self.own_ingest = ingest
        self.workers = workers

    @property
    def ingest(self) -> IngestStats:
        return self.own_ingest.plus(self.workers()) if self.workers is not None else self.own_ingest

    def collect(self):
        ingest = self.ingest  # once: with workers it reads their files
        requests = CounterMetricFamily(
            "metrics_proxy_ingest_requests", "Acknowledged ingest requests, by kind", labels=["kind"]
        )
        for kind, value in sorted(ingest.requests.items()):
            requests.add_metric([kind], value)
        yield requests
        yield CounterMetricFamily(
            "metrics_proxy_ingest_counts", "Usage counts (yes + no) acknowledged", value=ingest.counts_accepted
        )
        dropped = CounterMetricFamily(
            "metrics_proxy_dropped_rows", "Metric rows refused or dropped, by reason", labels=["reason"]
        )
        for reason, value in sorted(ingest.dropped.items()):
            dropped.add_metric([reason], value)
        yield dropped
        yield CounterMetricFamily(
            "metrics_proxy_worker_backlog_waits",
            "Posts an ingest worker held (up to 10 s, then 503) until the primary folded its journal",
            value=ingest.backlog_waits,
        )
        dropped_counts = CounterMetricFamily(
            "metrics_proxy_dropped_counts",
            "Acknowledged usage counts (yes + no) deleted before delivery, by reason",
            labels=["reason"],
        )
        space = self.store.space
        for reason, value in sorted(space.dropped_counts.items() if space else ()):
            dropped_counts.add_metric([reason], value)
        yield dropped_counts
        pruned = CounterMetricFamily(
            "metrics_proxy_pruned_rows",
            "Read-history rows deleted, by table and why: retention (older than the policy) or space "
            "(given way to new ingest in a full store)",
            labels=["table", "reason"],
        )
        for (table, reason), value in sorted(self.store.pruned_rows.items()):
            pruned.add_metric([table, reason], value)
        yield pruned
        yield CounterMetricFamily(
            "metrics_proxy_store_quarantined",
            "Corrupt databases moved to <data_dir>/quarantine/ at start-up (a fresh one was created)",
            value=len(self.store.quarantined),
        )
        if space is not None:
            yield from _size_limit(space)
        yield from _disk_reserve(self.store.disk_reserve)
        writer = self.store.writer
        if writer is None:
            return
        stats = writer.stats
        yield CounterMetricFamily(
            "metrics_proxy_sqlite_commits", "Group commits of the ingest journal", value=stats.commits
        )
        yield CounterMetricFamily(
            "metrics_proxy_sqlite_commit_failures", "Journal commits that failed", value=stats.failed_commits
        )
        yield HistogramMetricFamily(
            "metrics_proxy_group_commit_size",
            "Requests per group commit",
            buckets=cumulative_buckets(BATCH_SIZE_BUCKETS, stats.batch_sizes),
            sum_value=stats.requests,
        )
        yield _duration_histogram(
            "metrics_proxy_sqlite_commit_duration_seconds", "Duration of journal group commits", stats.durations,
        )
        yield CounterMetricFamily("metrics_proxy_folds", "Folds of the journal into the tables", value=self.store.folds)
        yield _duration_histogram(
            "metrics_proxy_fold_duration_seconds",
            "Duration of fold transactions (ingest waits while one runs; a staged fold: the staging one)",
            self.store.fold_durations,
        )
        yield CounterMetricFamily(
            "metrics_proxy_idempotent_replays",
            "Bulk posts with an already recorded Idempotency-Key: answered 202, not counted again",
            value=stats.replays,
        )


def _duration_histogram(name: str, documentation: str, durations: Durations) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, documentation, buckets=cumulative_buckets(durations.bounds, durations.counts),
        sum_value=durations.total_seconds,
    )


def _size_limit(space: BoundedSpace):
    pages, free = space.limit.pages()
    budget = space.limit.budget
    yield GaugeMetricFamily(
        "metrics_proxy_db_used_bytes", "Bytes of the database file in use (free pages excluded)",
        value=(pages - free) * budget.page_size,
    )
    yield GaugeMetricFamily(
        "metrics_proxy_db_wal_bytes", "Size of the -wal file", value=space.limit.wal_bytes(),
    )
    yield GaugeMetricFamily(
        "metrics_proxy_db_limit_bytes", "max_db_size as enforced (whole pages, database and -wal)",
        value=(budget.hard_pages + budget.wal_pages) * budget.page_size,
    )
    yield GaugeMetricFamily(
        "metrics_proxy_db_high_water_bytes", "Pages in use above this refuse new ingest",
        value=budget.high_water_pages * budget.page_size,
    )
    yield CounterMetricFamily(
        "metrics_proxy_reserve_folds", "Folds that only fitted above the high-water mark",
        value=space.reserve_folds,
    )


def _disk_reserve(reserve: DiskReserve):
    """The reserve on the data folder's filesystem (storage/capacity/disk_reserve.py)."""
    yield GaugeMetricFamily(
        "metrics_proxy_disk_free_bytes", "Bytes free on the data folder's filesystem (statvfs, unprivileged)",
        value=reserve.free_bytes(),
    )
    yield GaugeMetricFamily(
        "metrics_proxy_disk_reserve_bytes", "disk_reserve: bytes held for a full filesystem (0: none)",
        value=reserve.size,
    )
    yield GaugeMetricFamily(
        "metrics_proxy_disk_reserve_held_bytes",
        "Bytes the reserve file holds now: disk_reserve, or 0 while it is released on a full filesystem",
        value=reserve.held_bytes(),
    )
    yield GaugeMetricFamily(
        "metrics_proxy_disk_reserve_in_use",
        "1 while the reserve is released and less than it is free: ingest refused, not ready",
        value=int(reserve.refusal() is not None),
    )
    yield CounterMetricFamily(
        "metrics_proxy_disk_reserve_released", "Times the reserve file was given back on a full filesystem",
        value=reserve.releases,
    )
    yield CounterMetricFamily(
        "metrics_proxy_disk_reserve_restored", "Times the reserve file was allocated again once there was room",
        value=reserve.restores,
    )


class ForwarderCollector(Collector):
    """The counters of one upstream forwarder."""

    def __init__(self, stats: ForwarderStats) -> None:
        self.stats = stats

    def collect(self):
        yield from forwarder_families(self.stats)


def forwarder_families(stats: ForwarderStats):
    requests = CounterMetricFamily(
        "metrics_proxy_upstream_requests", "Upstream bulk requests, by answer status", labels=["status"]
    )
    for status, value in sorted(stats.requests.items()):
        requests.add_metric([status], value)
    yield requests
    yield CounterMetricFamily("metrics_proxy_upstream_retries", "Upstream sends retried after backoff", value=stats.retries)
    yield CounterMetricFamily(
        "metrics_proxy_upstream_ambiguous_batches",
        "Batches resent after a timeout or reset once the body was out (maybe counted twice)",
        value=stats.ambiguous_batches,
    )
    yield CounterMetricFamily(
        "metrics_proxy_upstream_dead_lettered_rows", "Items the upstream refused for good", value=stats.dead_lettered_rows
    )
    yield GaugeMetricFamily(
        "metrics_proxy_upstream_paused_environments", "Environments paused by 401/403/404",
        value=len(stats.paused_environments),
    )
    yield GaugeMetricFamily(
        "metrics_proxy_upstream_environments_without_token",
        "Environments whose counts stay pending because upstream.tokens has no token for them",
        value=len(stats.environments_without_token),
    )
    yield GaugeMetricFamily(
        "metrics_proxy_upstream_last_success_timestamp_seconds", "Time of the last 2xx from the upstream",
        value=stats.last_success_time,
    )


def build_registry(store: Store, ingest: IngestStats, workers: WorkersCounters | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(store, ingest, workers))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
