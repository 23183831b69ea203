"""Staged folds: a large fold's count deltas, written into the tables one chunk at a time.

One transaction writing 12,800 hot keys into seven tables holds the event loop for ~250 ms. So the
folder stages such a fold instead: one short transaction drops the folded journal rows and stores
the count deltas here, in chunks; then each chunk is written into the tables and deleted in a
transaction of its own, and requests are answered between chunks. Every acknowledged count is in
exactly one of the journal, this table or the tables, whenever a crash comes; a staged chunk left by
a crash is written at the next start, and any other fold writes what is staged first.
"""

from __future__ import annotations

import sqlite3


def stage(db: sqlite3.Connection, chunks: list[bytes]) -> None:
    db.executemany("INSERT INTO fold_staging (chunk) VALUES (?)", [(chunk,) for chunk in chunks])


def any_staged(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT EXISTS (SELECT 1 FROM fold_staging)").fetchone()[0] == 1


def first_chunk(db: sqlite3.Connection) -> tuple[int, bytes] | None:
    return db.execute("SELECT seq, chunk FROM fold_staging ORDER BY seq LIMIT 1").fetchone()


def drop_chunk(db: sqlite3.Connection, seq: int) -> None:
    db.execute("DELETE FROM fold_staging WHERE seq = ?", (seq,))
