"""Prometheus view of the feature documents: how old each one is, and how upstream polls went."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from proxy.unleash.features.cache import FeatureCache


class FeatureCollector(Collector):
    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def collect(self):
        age = GaugeMetricFamily(
            "metrics_proxy_features_age_seconds",
            "Seconds since the features document in service was last confirmed by its source",
            labels=["environment"],
        )
        for environment, seconds in self.cache.ages().items():
            age.add_metric([environment], seconds)
        yield age
        polls = CounterMetricFamily(
            "metrics_proxy_features_polls",
            "Upstream feature polls, by outcome (updated, not_modified, failed)",
            labels=["environment", "outcome"],
        )
        for (environment, outcome), count in sorted(self.cache.stats.polls.items()):
            polls.add_metric([environment, outcome], count)
        yield polls
