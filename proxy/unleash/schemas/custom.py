"""Wire schema of POST /api/client/metrics/custom (Unleash 7.x custom metrics)."""

from __future__ import annotations

import msgspec

from proxy.unleash.schemas.limits import LabelName, LabelValue, MetricName


class CustomMetric(msgspec.Struct, kw_only=True):
    name: MetricName
    value: float  # JSON numbers only: a string or boolean value is refused
    labels: dict[LabelName, LabelValue] | None = None


class CustomMetrics(msgspec.Struct, kw_only=True):
    metrics: list[CustomMetric]
