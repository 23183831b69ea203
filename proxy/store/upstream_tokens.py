"""Tokens the upstream has answered for: valid ones with their kind, invalid ones with kind NULL.

Kept durably so a restart during an upstream outage still knows which tokens were valid.
"""

from __future__ import annotations

import sqlite3

TokenVerdict = tuple[str | None, str | None, float]  # kind (None = invalid), environment, checked at


def load(db: sqlite3.Connection) -> dict[str, TokenVerdict]:
    rows = db.execute("SELECT token, kind, environment, checked FROM upstream_tokens").fetchall()
    return {token: (kind, environment, checked) for token, kind, environment, checked in rows}


def save(db: sqlite3.Connection, verdicts: dict[str, TokenVerdict]) -> None:
    try:
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR REPLACE INTO upstream_tokens (token, kind, environment, checked) VALUES (?, ?, ?, ?)",
            [(token, *verdict) for token, verdict in verdicts.items()],
        )
        db.execute("COMMIT")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
