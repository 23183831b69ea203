"""The Unleash outbox cut: pending counts, new SDK instances and impact metrics of an environment,
moved into outbox batches (proxy/storage/outbox.py) in one transaction, and what `metrics-proxy
status` reads back.

Pending counts are filled by the fold (storage/usage/aggregate.py); a row is in pending_counts or
in a batch, never both, never neither.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from proxy.storage.outbox import OutboxItem, insert_batch, set_state, state


@dataclass(slots=True)
class PendingRow:
    app_name: str
    feature_name: str
    hour: int
    yes: int
    no: int
    variants: str | None


@dataclass(slots=True)
class InstanceRow:
    app_name: str
    instance_id: str
    sdk_version: str | None
    strategies: str | None
    interval: float | None
    started: str | None
    created_at: float
    last_seen: float


@dataclass(slots=True)
class PendingImpact:
    app_name: str
    name: str
    labels: str
    row: bytes  # msgpack ImpactRow, merged since the last cut


# Turns one environment's pending rows, new instances and impact metrics into request-sized lists.
Chunker = Callable[[list[PendingRow], list[InstanceRow], list[PendingImpact]], list[list[OutboxItem]]]


def environments(db: sqlite3.Connection) -> list[str]:
    """Environments with anything to send: pending counts, instances, impact metrics or batches."""
    rows = db.execute(
        "SELECT environment FROM pending_counts UNION SELECT environment FROM instances "
        "UNION SELECT environment FROM pending_impact_metrics "
        "UNION SELECT environment FROM outbox_batches WHERE vendor = 'unleash' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def cut(db: sqlite3.Connection, environment: str, now: float, chunker: Chunker, new_id: Callable[[], str],
        max_rows: int = 5000, instance_refresh: float = 0.0) -> tuple[int, bool]:
    """Move up to max_rows of the environment's pending rows, oldest hour first (and the
    instances to announce) into new batches.

    Returns (batches created, whether rows remain). Inside the caller's transaction (Store.write): a row is in
    pending_counts or in a batch, never both, never neither. max_rows bounds how long the
    event loop (and so ingest) waits on one cut.

    Instances first seen since the last cut are always announced. Instances already announced
    are announced again (keeping their last-seen time fresh upstream) only once
    instance_refresh seconds have passed since the last such refresh: an SDK reporting every
    10 s would otherwise cost an application entry in every cut."""
    watermark_key = f"apps_sent_until:{environment}"
    refresh_key = f"apps_refreshed_until:{environment}"
    pending = [
        PendingRow(*r) for r in db.execute(
            "SELECT app_name, feature_name, hour, yes, no, variants FROM pending_counts "
            "WHERE environment = ? AND (yes <> 0 OR no <> 0) ORDER BY hour, app_name, feature_name "
            "LIMIT ?",
            (environment, max_rows + 1),
        )
    ]
    more = len(pending) > max_rows
    del pending[max_rows:]
    since = float(state(db, watermark_key) or 0)
    refreshed = float(state(db, refresh_key) or since)
    refresh = now - refreshed >= instance_refresh
    seen = [
        InstanceRow(*r) for r in db.execute(
            "SELECT app_name, instance_id, sdk_version, strategies, interval, started, created_at, "
            "last_seen FROM instances WHERE environment = ? AND last_seen > ? "
            "ORDER BY app_name, instance_id",
            (environment, refreshed if refresh else since),
        )
    ]
    instances = seen if refresh else [i for i in seen if i.created_at > since]
    impact = [
        PendingImpact(*r) for r in db.execute(
            "SELECT app_name, name, labels, row FROM pending_impact_metrics WHERE environment = ? "
            "ORDER BY app_name, name, labels",
            (environment,),
        )
    ]
    chunks = chunker(pending, instances, impact) if pending or instances or impact else []
    for chunk in chunks:
        insert_batch(db, environment, now, chunk, new_id())
    db.executemany(
        "DELETE FROM pending_counts WHERE environment = ? AND app_name = ? AND feature_name = ? "
        "AND hour = ?",
        [(environment, r.app_name, r.feature_name, r.hour) for r in pending],
    )
    db.executemany(
        "DELETE FROM pending_impact_metrics WHERE environment = ? AND app_name = ? AND name = ? "
        "AND labels = ?",
        [(environment, r.app_name, r.name, r.labels) for r in impact],
    )
    # Rows with yes = 0 and no = 0 are never sent (Unleash drops them anyway).
    db.execute("DELETE FROM pending_counts WHERE environment = ? AND yes = 0 AND no = 0", (environment,))
    if seen:
        newest = max(i.last_seen for i in seen)
        set_state(db, watermark_key, repr(max(since, newest)))
        if refresh:
            set_state(db, refresh_key, repr(newest))
    return len(chunks), more
