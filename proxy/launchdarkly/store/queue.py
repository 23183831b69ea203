"""The write queue's rows in the shared outbox (vendor "launchdarkly"): each write accepted while the
upstream was unreachable is one batch of one item, its environment the project, so a project's
writes replay one at a time in the order they were accepted (proxy/launchdarkly/upstream/writes.py).
The local change and its queue entry commit in one transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import aiosqlite

from proxy.storage.outbox import OutboxItem, insert_batch

VENDOR = "launchdarkly"
KIND = "write"
T = TypeVar("T")


def apply_and_queue(db: sqlite3.Connection, apply: Callable[[sqlite3.Connection], T], project: str, item: str,
                    now: float, batch_id: str) -> T:
    """`apply(db)` (the local change) and the write queued behind the project's others."""
    result = apply(db)
    insert_batch(db, project, now, [OutboxItem(KIND, item)], batch_id, VENDOR)
    return result


def queued_count(db: sqlite3.Connection, project: str | None = None) -> int:
    if project is None:
        return db.execute("SELECT count(*) FROM outbox_batches WHERE vendor = ?", (VENDOR,)).fetchone()[0]
    return db.execute("SELECT count(*) FROM outbox_batches WHERE vendor = ? AND environment = ?",
                      (VENDOR, project)).fetchone()[0]


def note_project(db: sqlite3.Connection, project: str) -> None:
    """Remember a project the proxy was asked about (refreshed from the upstream from now on)."""
    db.execute("INSERT OR IGNORE INTO ld_projects (project) VALUES (?)", (project,))


def projects(db: sqlite3.Connection) -> list[tuple[str, float | None]]:
    return db.execute("SELECT project, refreshed FROM ld_projects ORDER BY project").fetchall()


async def dead_letters(db: aiosqlite.Connection, limit: int) -> tuple[int, list[tuple]]:
    """How many dead letters there are, and the newest `limit`: (id, project, item, status, reason, created)."""
    async with db.execute("SELECT count(*) FROM dead_letters WHERE vendor = ?", (VENDOR,)) as cursor:
        total = (await cursor.fetchone())[0]
    async with db.execute(
        "SELECT id, environment, item, status, reason, created FROM dead_letters WHERE vendor = ? "
        "ORDER BY id DESC LIMIT ?", (VENDOR, limit)) as cursor:
        return total, list(await cursor.fetchall())
