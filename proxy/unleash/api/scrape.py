"""The families a scrape reads from the store: outbox state, database size, per-flag usage and
custom metrics. Rendered by hand (proxy/observability/exposition.py); the low-cardinality counters of the
process come from the prometheus_client registry (observability/telemetry.py, http_metrics.py)."""

from __future__ import annotations

from itertools import groupby

from aiohttp import web

from proxy.api.state import CLOCK, SETTINGS, STORE
from proxy.observability.exposition import family, usage_family
from proxy.unleash.state import AUTH
from proxy.unleash.store import custom_metrics

CUSTOM_HELP = "Custom metric reported through metrics-proxy"


def token_validation_families(app: web.Application) -> list[str]:
    validator = app[AUTH].validator
    if validator is None:
        return []
    lines = family("metrics_proxy_token_validation_requests_total", "counter",
                   "Requests sent to the upstream's /edge/validate", [((), validator.calls)])
    lines += family("metrics_proxy_token_validation_failures_total", "counter",
                    "Token checks the upstream could not answer", [((), validator.failures)])
    return lines


async def store_families(app: web.Application) -> list[str]:
    store, settings, now = app[STORE], app[SETTINGS], app[CLOCK].now()
    if store.writer is None:  # not open: nothing to read
        return token_validation_families(app)
    lines = token_validation_families(app)
    pending = await store.pending_by_environment()
    lines += family(
        "metrics_proxy_outbox_pending_rows", "gauge", "Rows in the outbox not yet forwarded, by environment",
        [((("environment", env),), rows) for env, rows, _counts, _oldest in pending],
    )
    lines += family(
        "metrics_proxy_outbox_pending_counts", "gauge", "Usage counts (yes + no) in the outbox, by environment",
        [((("environment", env),), counts) for env, _rows, counts, _oldest in pending],
    )
    lines += family(
        "metrics_proxy_outbox_oldest_pending_age_seconds", "gauge",
        "Seconds since the hour of the oldest outbox row, by environment",
        [((("environment", env),), max(0.0, now - oldest)) for env, _rows, _counts, oldest in pending],
    )
    custom_pending, impact_pending = await store.pending_metric_series()
    lines += family("metrics_proxy_outbox_pending_custom_series", "gauge",
                    "Custom-metric series waiting to be forwarded", [((), custom_pending)])
    lines += family(
        "metrics_proxy_outbox_pending_impact_series", "gauge",
        "Impact-metric series waiting to be forwarded, by environment",
        [((("environment", env),), n) for env, n in impact_pending],
    )
    lines += family("metrics_proxy_database_size_bytes", "gauge", "SQLite database, WAL and shm files on disk",
                    [((), store.size_on_disk())])
    limit = settings.prometheus_max_usage_series
    if limit:
        rows, left_out = await store.busiest_usage(limit)
        lines += usage_family(rows)
        lines += family(
            "metrics_proxy_usage_series_left_out", "gauge",
            "(app, flag) pairs not rendered in feature_toggle_usage_total (prometheus_max_usage_series)",
            [((), left_out)],
        )
    series = await store.read(custom_metrics.live_series, now - settings.custom_metrics_ttl)
    for name, group in groupby(series, key=lambda s: s[0]):
        # Clients send a counter's current value, so the latest value is the series' value;
        # names ending in _total are counters by Prometheus convention, the rest gauges.
        kind = "counter" if name.endswith("_total") else "gauge"
        lines += family(name, kind, CUSTOM_HELP, [(sorted(labels.items()), value) for _n, labels, value in group])
    return lines
