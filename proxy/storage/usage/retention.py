"""Pruning of read history: hourly and per-minute counts, flag sightings and SDK instances.

Why chunks: pruning runs on the single writer connection on the event loop, like ingest commits and
folds. Each chunk is its own short transaction and the loop runs other tasks between chunks, so a
large backlog (after a long stop) never stalls the 202s. The outbox (`pending_counts` and the
forwarder's batch tables) is not in `HISTORY`: counts not yet delivered upstream are never pruned.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from proxy.storage.transaction import write_transaction

PRUNE_CHUNK_ROWS = 2000

# table -> (its primary key columns, the time column the cutoff applies to)
HISTORY: dict[str, tuple[str, str]] = {
    "hourly_counts": ("environment, app_name, feature_name, hour", "hour"),
    "minute_counts": ("environment, app_name, feature_name, minute", "minute"),
    "minute_flag_totals": ("feature_name, minute", "minute"),
    "minute_app_totals": ("app_name, minute", "minute"),
    "flag_seen": ("environment, app_name, feature_name", "last_seen"),
    "instances": ("app_name, instance_id, environment", "last_seen"),
}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    hourly_hours: int = 48
    minute_minutes: int = 60
    instance_hours: int = 48

    def cutoffs(self, now: float) -> dict[str, float]:
        """Rows whose time column is below the cutoff are pruned."""
        # An hour bucket is kept while any part of it is inside the window, so that
        # `hoursBack = retention_hours` still finds its oldest hour.
        hour_cutoff = (now - self.hourly_hours * 3600) // 3600 * 3600
        minute_cutoff = (now - self.minute_minutes * 60) // 60 * 60
        return {
            "hourly_counts": hour_cutoff,
            "minute_counts": minute_cutoff,
            "minute_flag_totals": minute_cutoff,
            "minute_app_totals": minute_cutoff,
            "flag_seen": now - self.hourly_hours * 3600,
            "instances": now - self.instance_hours * 3600,
        }


def prune_chunk(db: sqlite3.Connection, table: str, cutoff: float, limit: int = PRUNE_CHUNK_ROWS) -> int:
    """Delete up to `limit` rows of `table` older than `cutoff` in one transaction (uses the
    table's time index); returns how many went."""
    keys, column = HISTORY[table]
    with write_transaction(db):
        cursor = db.execute(
            f"DELETE FROM {table} WHERE ({keys}) IN "
            f"(SELECT {keys} FROM {table} WHERE {column} < ? LIMIT ?)",
            (cutoff, limit),
        )
    return cursor.rowcount


async def prune_history(db: sqlite3.Connection, policy: RetentionPolicy, now: float,
                        limit: int = PRUNE_CHUNK_ROWS, changed: Callable[[], None] = lambda: None) -> dict[str, int]:
    """Prune every history table down to the policy, chunk by chunk; returns rows deleted per table.
    `changed` is called after every chunk that deleted rows (read answers cached before are stale)."""
    deleted: dict[str, int] = {}
    for table, cutoff in policy.cutoffs(now).items():
        total = 0
        while True:
            gone = prune_chunk(db, table, cutoff, limit)
            if gone:
                changed()
            total += gone
            if gone < limit:
                break
            await asyncio.sleep(0)  # let commits and handlers run between chunks
        deleted[table] = total
    return deleted
