"""POST /api/client/metrics/custom: apps' own metrics, exposed on the proxy's Prometheus endpoint.

Names and label names are sanitised as Unleash does (characters outside [a-zA-Z0-9_] become `_`);
what still is not a Prometheus name is refused with 400 naming the entry.
"""

from __future__ import annotations

import math
import re

from aiohttp import web

from proxy.api.body import read_json
from proxy.api.errors import bad_data, unavailable
from proxy.api.state import CLOCK, INGEST_STATS, SETTINGS, STORE
from proxy.storage import StorageUnavailable
from proxy.unleash.auth import TokenKind
from proxy.unleash.schemas.custom import CustomMetrics
from proxy.unleash.state import AUTH
from proxy.unleash.store import custom_metrics
from proxy.unleash.store.custom_metrics import Sample, SeriesLimitReached

RETRY_AFTER_SECONDS = 10
_NOT_NAME_CHAR = re.compile(r"[^a-zA-Z0-9_]")
_NAME_START = re.compile(r"[a-zA-Z_]")
# Families the proxy renders itself; a custom metric of the same name would corrupt the scrape.
RESERVED_PREFIXES = ("metrics_proxy_", "feature_toggle_usage")


def sanitise(name: str) -> str:
    return _NOT_NAME_CHAR.sub("_", name)


def _valid_samples(body: CustomMetrics) -> list[Sample]:
    samples: list[Sample] = []
    for i, metric in enumerate(body.metrics):
        name = sanitise(metric.name)
        if not _NAME_START.match(name):
            raise bad_data(f"{metric.name!r} is not a Prometheus metric name: it must start with a letter or _",
                           f"metrics[{i}].name")
        if name.startswith(RESERVED_PREFIXES):
            raise bad_data(f"{name!r} is reserved for the proxy's own metrics", f"metrics[{i}].name")
        if not math.isfinite(metric.value):
            raise bad_data("value must be a finite number", f"metrics[{i}].value")
        labels: dict[str, str] = {}
        for key, value in (metric.labels or {}).items():
            label = sanitise(key)
            if not _NAME_START.match(label) or label.startswith("__"):
                raise bad_data(f"{key!r} is not a Prometheus label name", f"metrics[{i}].labels[{key!r}]")
            if label in labels:
                raise bad_data(f"label {key!r} repeats {label!r} after sanitising", f"metrics[{i}].labels[{key!r}]")
            labels[label] = value
        samples.append((name, labels, metric.value))
    return samples


async def post_custom_metrics(request: web.Request) -> web.Response:
    app = request.app
    await app[AUTH].require(request, TokenKind.CLIENT)
    settings = app[SETTINGS]
    body = await read_json(request, CustomMetrics, settings.max_body_size)
    samples = _valid_samples(body)
    try:
        app[STORE].write(
            custom_metrics.record, samples, app[CLOCK].now(), settings.custom_metrics_ttl,
            settings.custom_metrics_max_series, settings.upstream is not None,
        )
    except SeriesLimitReached as exc:
        app[INGEST_STATS].dropped["custom_series_limit"] += 1
        raise bad_data(
            f"this proxy already keeps {settings.custom_metrics_max_series} custom-metric series "
            "(custom_metrics_max_series); new series are refused until old ones expire",
            f"metrics[{exc.index}]",
        ) from None
    except StorageUnavailable as exc:
        reason = "the local store is full" if exc.disk_full else "the local store cannot write"
        raise unavailable(f"{reason}; nothing was stored, retry later", RETRY_AFTER_SECONDS) from None
    app[INGEST_STATS].requests["custom_metrics"] += 1
    return web.Response(status=202)


def routes() -> list[web.RouteDef]:
    return [web.post("/api/client/metrics/custom", post_custom_metrics)]



