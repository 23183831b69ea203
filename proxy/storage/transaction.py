"""The one way a write transaction runs on the writer connection: BEGIN IMMEDIATE, the body,
COMMIT, and an explicit ROLLBACK on any error, the COMMIT's own included (after SQLITE_FULL SQLite
may have undone one statement or the whole transaction; either way the shared connection must not
be left inside one)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")  # inside the try: a COMMIT that fails (disk full, I/O error) is rolled back too
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
