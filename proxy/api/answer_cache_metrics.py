"""The read-answer cache's counters and size (proxy/api/answer_cache.py), read at scrape time."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.api.answer_cache import AnswerCache


class AnswerCacheCollector(Collector):
    def __init__(self, cache: AnswerCache) -> None:
        self.cache = cache

    def collect(self):
        cache = self.cache
        yield CounterMetricFamily("metrics_proxy_read_cache_hits", "Read answers served from the answer cache",
                                  value=cache.hits)
        yield CounterMetricFamily(
            "metrics_proxy_read_cache_misses",
            "Read answers computed from the store (nothing cached, or stale: new data or a moved window)",
            value=cache.misses,
        )
        yield CounterMetricFamily(
            "metrics_proxy_read_cache_evictions",
            "Cached read answers dropped to stay within read_cache_max_bytes / read_cache_max_entries",
            value=cache.evictions,
        )
        yield GaugeMetricFamily("metrics_proxy_read_cache_bytes",
                                "Bytes of cached read answers (identity and gzip variants)", value=cache.bytes)
        yield GaugeMetricFamily("metrics_proxy_read_cache_entries", "Cached read answers", value=len(cache))
