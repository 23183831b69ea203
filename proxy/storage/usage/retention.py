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
    # Only without an upstream (RetentionPolicy.forwarding False): nothing would ever send them.
    "pending_counts": ("environment, app_name, feature_name, hour", "hour"),
}


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    hourly_hours: int = 48
    minute_minutes: int = 60
    instance_hours: int = 48
    # With an upstream, undelivered counts are never pruned; standalone they are history too.
    forwarding: bool = True

    def cutoffs(self, now: float) -> dict[str, float]:
        """Rows whose time column is below the cutoff are pruned."""
        # An hour bucket is kept while any part of it is inside the window, so that
        # `hoursBack = retention_hours` still finds its oldest hour.
        hour_cutoff = (now - self.hourly_hours * 3600) // 3600 * 3600
        minute_cutoff = (now - self.minute_minutes * 60) // 60 * 60
        cutoffs = {
            "hourly_counts": hour_cutoff,
            "minute_counts": minute_cutoff,
            "minute_flag_totals": minute_cutoff,
            "minute_app_totals": minute_cutoff,
            "flag_seen": now - self.hourly_hours * 3600,
            "instances": now - self.instance_hours * 3600,
        }
        if not self.forwarding:
            cutoffs["pending_counts"] = hour_cutoff
        return cutoffs


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
    deleted["usage_totals"] = await _prune_orphans(db, limit, changed)
    return deleted


async def _prune_orphans(db: sqlite3.Connection, limit: int, changed: Callable[[], None]) -> int:
    """All-time usage of flags no longer in the hourly history (no hour of theirs kept in any
    environment): their `feature_toggle_usage_total` series ends, and the table stays bounded by
    the flags seen lately instead of every flag ever reported."""
    total = 0
    while True:
        gone = _prune_orphan_chunk(db, limit)
        if gone:
            changed()
        total += gone
        if gone < limit:
            return total
        await asyncio.sleep(0)


def _prune_orphan_chunk(db: sqlite3.Connection, limit: int) -> int:
    with write_transaction(db):
        return db.execute(
            "DELETE FROM usage_totals WHERE (app_name, feature_name) IN ("
            " SELECT app_name, feature_name FROM usage_totals AS t WHERE NOT EXISTS ("
            "  SELECT 1 FROM hourly_counts AS h WHERE h.feature_name = t.feature_name AND h.app_name = t.app_name)"
            " LIMIT ?)",
            (limit,),
        ).rowcount


def give_way(db: sqlite3.Connection, now: float, keep_pending: bool = True,
             limit: int = PRUNE_CHUNK_ROWS) -> dict[str, int]:
    """Make room for new ingest in a full store by deleting the older half of the stored hours of
    history: with `keep_pending` (an upstream is owed them) only hours older than every undelivered
    one, else (standalone) the pending counts of those hours go too. Deleting rows leaves their
    pages part empty, so freed room shows as whole pages only once enough goes. The current hour is
    always kept. Returns rows deleted per table ({} when there is nothing to give)."""
    oldest_pending = db.execute("SELECT min(hour) FROM pending_counts").fetchone()[0] if keep_pending else None
    current = now // 3600 * 3600
    hours = [h for (h,) in db.execute("SELECT DISTINCT hour FROM hourly_counts WHERE hour < ? ORDER BY hour",
                                      (current,))]
    given = [h for h in hours if oldest_pending is None or h < oldest_pending]
    if not given:
        return {}
    cutoff = given[(len(given) - 1) // 2] + 3600  # the older half, at least the oldest hour
    deleted: dict[str, int] = {}
    tables = ("hourly_counts", "minute_counts", "minute_flag_totals", "minute_app_totals", "flag_seen")
    for table in tables if keep_pending else (*tables, "pending_counts"):
        total = 0
        while (gone := prune_chunk(db, table, cutoff, limit)) == limit:
            total += gone
        deleted[table] = total + gone
    orphans = 0
    while (gone := _prune_orphan_chunk(db, limit)) == limit:
        orphans += gone
    deleted["usage_totals"] = orphans + gone
    return deleted
