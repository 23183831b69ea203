"""HTTP requests by route and status, their duration and the bytes they carried in.

The route wrapper (api/routing.py) bumps plain numbers; HttpCollector turns them into families at scrape time.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from proxy.observability.exposition import cumulative_buckets

if TYPE_CHECKING:
    from proxy.observability.worker_stats import WorkerCounters

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED_ROUTE = "unmatched"
# Any other method a client invents is counted as "other": label values must stay bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(slots=True)
class RouteDurations:
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total_seconds: float = 0.0


@dataclass(slots=True)
class HttpStats:
    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # route, method, status
    bytes_in: Counter[str] = field(default_factory=Counter)  # by route
    durations: defaultdict[str, RouteDurations] = field(default_factory=lambda: defaultdict(RouteDurations))
    rate_limited: Counter[str] = field(default_factory=Counter)  # requests answered 429, by limit (api/rate_limits.py)

    def plus(self, workers: list[WorkerCounters]) -> HttpStats:
        """These requests and the ingest workers' (observability/worker_stats.py)."""
        if not workers:
            return self
        total = HttpStats(Counter(self.requests), Counter(self.bytes_in), rate_limited=Counter(self.rate_limited))
        for route, durations in self.durations.items():
            total.durations[route] = RouteDurations(list(durations.buckets), durations.total_seconds)
        for counters in workers:
            for route, method, status, n in counters.http_requests:
                total.requests[(route, method, status)] += n
            total.bytes_in.update(counters.http_bytes)
            total.rate_limited.update(counters.rate_limited)
            for route, (buckets, seconds) in counters.http_durations.items():
                mine = total.durations[route]
                mine.buckets = [a + b for a, b in zip(mine.buckets, buckets, strict=True)]
                mine.total_seconds += seconds
        return total

    def record(self, route: str, method: str, status: int, seconds: float, size: int) -> None:
        self.requests[(route, method, str(status))] += 1
        self.bytes_in[route] += size
        hist = self.durations[route]
        hist.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        hist.total_seconds += seconds


class HttpCollector(Collector):
    def __init__(self, stats: HttpStats, workers: Callable[[], list[WorkerCounters]] | None = None) -> None:
        self.own_stats = stats
        self.workers = workers

    @property
    def stats(self) -> HttpStats:
        return self.own_stats.plus(self.workers()) if self.workers is not None else self.own_stats

    def collect(self):
        stats = self.stats  # once: with workers it reads their files
        requests = CounterMetricFamily(
            "metrics_proxy_http_requests", "HTTP requests answered, by route, method and status",
            labels=["route", "method", "status"],
        )
        for (route, method, status), n in sorted(stats.requests.items()):
            requests.add_metric([route, method, status], n)
        yield requests
        bytes_in = CounterMetricFamily(
            "metrics_proxy_http_request_bytes", "Request body bytes received (Content-Length), by route",
            labels=["route"],
        )
        for route, n in sorted(stats.bytes_in.items()):
            bytes_in.add_metric([route], n)
        yield bytes_in
        limited = CounterMetricFamily(
            "metrics_proxy_rate_limited_requests",
            "Requests answered 429 by an inbound rate limit (rate_limit_per_token, rate_limit_per_address), by limit",
            labels=["limit"],
        )
        for limit in ("address", "token"):
            limited.add_metric([limit], stats.rate_limited[limit])
        yield limited
        durations = HistogramMetricFamily(
            "metrics_proxy_http_request_duration_seconds", "Time to answer an HTTP request, by route",
            labels=["route"],
        )
        for route, hist in sorted(stats.durations.items()):
            durations.add_metric([route], cumulative_buckets(DURATION_BUCKETS, hist.buckets), hist.total_seconds)
        yield durations
