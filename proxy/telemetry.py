"""The proxy's own metrics, rendered in Prometheus text format.

Hot-path code only bumps plain integers; a custom collector turns them into metric families at
scrape time, so ingest pays nothing for observability.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from proxy.exposition import cumulative_buckets
from proxy.store.writer import BATCH_SIZE_BUCKETS, COMMIT_SECONDS_BUCKETS

if TYPE_CHECKING:
    from proxy.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class IngestStats:
    requests: Counter[str] = field(default_factory=Counter)  # by endpoint kind
    counts_accepted: int = 0  # yes + no acknowledged
    dropped: Counter[str] = field(default_factory=Counter)  # rows refused, by reason


class ProxyCollector(Collector):
    def __init__(self, store: Store, ingest: IngestStats) -> None:
        self.store = store
        self.ingest = ingest

    def collect(self):
        requests = CounterMetricFamily(
            "metrics_proxy_ingest_requests", "Acknowledged ingest requests, by kind", labels=["kind"]
        )
        for kind, value in sorted(self.ingest.requests.items()):
            requests.add_metric([kind], value)
        yield requests
        yield CounterMetricFamily(
            "metrics_proxy_ingest_counts", "Usage counts (yes + no) acknowledged", value=self.ingest.counts_accepted
        )
        dropped = CounterMetricFamily(
            "metrics_proxy_dropped_rows", "Metric rows refused or dropped, by reason", labels=["reason"]
        )
        for reason, value in sorted(self.ingest.dropped.items()):
            dropped.add_metric([reason], value)
        yield dropped
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
        yield CounterMetricFamily(
            "metrics_proxy_sqlite_commit_seconds", "Time spent in journal commits", value=stats.commit_seconds
        )
        yield HistogramMetricFamily(
            "metrics_proxy_sqlite_commit_duration_seconds",
            "Duration of journal group commits",
            buckets=cumulative_buckets(COMMIT_SECONDS_BUCKETS, stats.commit_durations),
            sum_value=stats.commit_seconds,
        )
        yield CounterMetricFamily("metrics_proxy_folds", "Folds of the journal into the tables", value=self.store.folds)


def build_registry(store: Store, ingest: IngestStats) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(store, ingest))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
