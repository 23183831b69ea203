"""Wire schema of POST /api/client/metrics/custom (Unleash 7.x custom metrics)."""

from __future__ import annotations

from typing import Annotated

import msgspec


class CustomMetric(msgspec.Struct, kw_only=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    value: float  # JSON numbers only: a string or boolean value is refused
    labels: dict[str, str] | None = None


class CustomMetrics(msgspec.Struct, kw_only=True):
    metrics: list[CustomMetric]
