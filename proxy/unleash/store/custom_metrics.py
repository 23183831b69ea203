"""Custom metrics: the latest value of each (name, labels) series, and the ones still to forward.

Unleash 7.5.1 keeps the latest posted value per series (clients send a counter's current value),
so a write replaces a value instead of adding to it. These posts are rare (one per SDK interval)
and are not additive, so they skip the journal and fold: each post is its own small transaction on
the writer connection, committed before the 202, like the journal's group commit.
"""

from __future__ import annotations

import json
import sqlite3

import aiosqlite

Sample = tuple[str, dict[str, str], float]  # name, labels, value


class SeriesLimitReached(Exception):
    """Storing the post would pass the series limit; nothing of it was stored."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index  # the first entry of the post that would have made a new series


def labels_key(labels: dict[str, str]) -> str:
    """One canonical text per label set, so the same labels in another order are the same series."""
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_UPSERT = """
    INSERT INTO {table} (name, labels, value, updated) VALUES (?, ?, ?, ?)
    ON CONFLICT (name, labels) DO UPDATE SET value = excluded.value, updated = excluded.updated
"""


def record(db: sqlite3.Connection, samples: list[Sample], now: float, ttl: float, max_series: int,
           forward: bool) -> None:
    """Store the samples (expiring stale series first), inside the caller's transaction
    (Store.write), or raise SeriesLimitReached, which rolls all of it back."""
    rows = [(name, labels_key(labels), float(value), now) for name, labels, value in samples]
    db.execute("DELETE FROM custom_metrics WHERE updated < ?", (now - ttl,))
    live = db.execute("SELECT count(*) FROM custom_metrics").fetchone()[0]
    new: set[tuple[str, str]] = set()
    for index, (name, labels, _value, _now) in enumerate(rows):
        key = (name, labels)
        if key in new:
            continue
        if db.execute("SELECT 1 FROM custom_metrics WHERE name = ? AND labels = ?", key).fetchone():
            continue
        new.add(key)
        if live + len(new) > max_series:
            raise SeriesLimitReached(index)
    db.executemany(_UPSERT.format(table="custom_metrics"), rows)
    if forward:
        db.executemany(_UPSERT.format(table="pending_custom_metrics"), rows)


async def live_series(db: aiosqlite.Connection, since: float) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every series updated at or after `since`, ordered by name."""
    cursor = await db.execute(
        "SELECT name, labels, value FROM custom_metrics WHERE updated >= ? ORDER BY name, labels", (since,)
    )
    return [(name, json.loads(labels), value) for name, labels, value in await cursor.fetchall()]


# --- forwarding: the latest value per series, sent to {upstream}/client/metrics/custom ------------

def pending_custom_metrics(db: sqlite3.Connection, limit: int = 1000) -> list[tuple[str, str, float, float]]:
    """(name, labels JSON, value, updated) of series changed since they were last sent."""
    return db.execute(
        "SELECT name, labels, value, updated FROM pending_custom_metrics ORDER BY updated, name, labels LIMIT ?",
        (limit,),
    ).fetchall()


def custom_metrics_sent(db: sqlite3.Connection, rows: list[tuple[str, str, float, float]]) -> None:
    """Forget the sent values (inside the caller's transaction: Store.write); a series updated
    meanwhile stays pending with its newer value."""
    db.executemany(
        "DELETE FROM pending_custom_metrics WHERE name = ? AND labels = ? AND updated <= ?",
        [(name, labels, updated) for name, labels, _value, updated in rows],
    )


def drop_pending_custom_metrics(db: sqlite3.Connection) -> int:
    return db.execute("DELETE FROM pending_custom_metrics").rowcount
