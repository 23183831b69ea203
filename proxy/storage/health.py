"""What readiness and the scrape need to know about the database itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from proxy.storage.transaction import write_transaction

# Big enough to need fresh pages, so a full disk (or a reached page limit) fails the probe even
# when a small row would still fit in a page that has room.
PROBE_BYTES = 16 * 1024


def probe_write(db: sqlite3.Connection, now: float) -> None:
    """Commit a write of PROBE_BYTES, so readiness means "a commit works now" (raises sqlite3.Error).

    The row is written and cleared in one transaction: the file does not grow, but the pages
    must be allocated for the commit to succeed."""
    with write_transaction(db):
        db.execute("INSERT OR REPLACE INTO readiness_probe (id, at, padding) VALUES (1, ?, zeroblob(?))",
                   (now, PROBE_BYTES))
        db.execute("UPDATE readiness_probe SET padding = NULL WHERE id = 1")


def size_on_disk(path: Path) -> int:
    """Bytes of the database and its WAL and shared-memory files."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except FileNotFoundError:
            pass
    return total


async def pending_by_environment(db: aiosqlite.Connection) -> list[tuple[str, int, int, int]]:
    """Outbox state per environment: (environment, rows, yes + no, oldest hour)."""
    cursor = await db.execute(
        """SELECT environment, count(*), sum(yes + no), min(hour) FROM pending_counts
           GROUP BY environment ORDER BY environment"""
    )
    return [tuple(row) for row in await cursor.fetchall()]


async def pending_metric_series(db: aiosqlite.Connection) -> tuple[int, list[tuple[str, int]]]:
    """Custom-metric series waiting to be forwarded, and impact-metric series per environment."""
    cursor = await db.execute("SELECT count(*) FROM pending_custom_metrics")
    custom = (await cursor.fetchone())[0]
    cursor = await db.execute(
        "SELECT environment, count(*) FROM pending_impact_metrics GROUP BY environment ORDER BY environment"
    )
    return custom, [tuple(row) for row in await cursor.fetchall()]
