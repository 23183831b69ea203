"""Helpers for the disk-bound and idempotency tests: request bodies and looks into the SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from proxy.storage.migrations import LATEST

HOUR = 3600


# A store bound small enough to fill in a test, with room for the empty schema's pages.
SMALL_STORE = 384 * 1024


def metrics_body(hour_start: float, flags: list[str], yes: int, no: int = 1, app: str = "app") -> dict:
    """A /api/client/metrics body whose bucket ends inside the hour starting at `hour_start`."""
    stop_ms = int(hour_start * 1000) + 1000
    toggles = {flag: {"yes": yes, "no": no} for flag in flags}
    return {"appName": app, "instanceId": "i-1", "bucket": {"start": stop_ms - 500, "stop": stop_ms, "toggles": toggles}}


def bulk_body(environment: str, flag: str, yes: int, no: int = 0, app: str = "edge-app") -> dict:
    return {
        "applications": [{"appName": app, "instanceId": "edge-1", "environment": environment}],
        "metrics": [{"featureName": flag, "appName": app, "environment": environment, "yes": yes, "no": no}],
    }


def query(db_path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read the proxy's database through a separate read-only connection."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def quick_check(db_path: Path) -> str:
    return query(db_path, "PRAGMA quick_check")[0][0]


def table_sum(db_path: Path, table: str, where: str = "1", params: tuple = ()) -> int:
    return query(db_path, f"SELECT coalesce(sum(yes + no), 0) FROM {table} WHERE {where}", params)[0][0]


def prometheus_value(text: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in Prometheus text, e.g. ('metrics_proxy_dropped_counts_total',
    'reason="overflow_drop_oldest"'); None when absent."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample == wanted:
            return float(value)
    return None


# An upstream nobody answers (and the forwarder's first cut an hour away): counts stay in the
# outbox (pending_counts), as they do with an upstream that is down. Standalone, no outbox is written.
UNREACHABLE_UPSTREAM = {"url": "http://127.0.0.1:9/api", "tokens": {"development": "default:development.up"},
                        "flush_interval": 3600.0, "shutdown_flush_timeout": 0.5}
UNREACHABLE_UPSTREAM_ENV = {"METRICS_PROXY_UPSTREAM_URL": UNREACHABLE_UPSTREAM["url"],
                            "METRICS_PROXY_UPSTREAM_TOKENS": "development=default:development.up",
                            "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "3600"}
