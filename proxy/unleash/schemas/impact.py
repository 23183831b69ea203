"""Wire schema of one `impactMetrics` entry in /api/client/metrics and /bulk posts (Unleash 7.x).

The usage posts keep `impactMetrics` as raw JSON and each entry is decoded on its own with these
Structs: a malformed impact metric is dropped and counted, and never costs the post's usage counts.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from proxy.unleash.schemas.client import Count
from proxy.unleash.schemas.limits import AppName, EnvironmentName, LabelName, LabelValue, MetricName


class HistogramBucket(msgspec.Struct, kw_only=True, omit_defaults=True):
    le: float | Literal["+Inf"]
    count: Count


class ImpactSample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Encoded (upstream) without the fields its kind does not use."""

    value: float | None = None  # counter and gauge
    labels: dict[LabelName, LabelValue | int | float] | None = None
    count: Count | None = None  # histogram
    sum: float | None = None
    buckets: list[HistogramBucket] | None = None


class ImpactMetric(msgspec.Struct, kw_only=True):
    name: MetricName
    help: Annotated[str, msgspec.Meta(max_length=1000)] = ""
    type: Literal["counter", "gauge", "histogram"]
    samples: list[ImpactSample]
    # Present on entries one proxy forwards to another inside a bulk batch (Unleash Edge's shape).
    appName: AppName | None = None
    environment: EnvironmentName | None = None


class SentImpactMetric(ImpactMetric, omit_defaults=True, kw_only=True):
    """An `impactMetrics` entry of a bulk body this proxy sends upstream (Unleash requires `help`)."""

    help: Annotated[str, msgspec.Meta(max_length=1000)]
