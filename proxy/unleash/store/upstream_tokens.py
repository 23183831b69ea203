"""Tokens the upstream has answered for: valid ones with their kind, invalid ones with kind NULL.

Kept durably so a restart during an upstream outage still knows which tokens were valid. Only a
SHA-256 digest of each token is stored: the database file never holds a usable secret.
"""

from __future__ import annotations

import hashlib
import sqlite3

TokenVerdict = tuple[str | None, str | None, float]  # kind (None = invalid), environment, checked at


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def load(db: sqlite3.Connection) -> dict[str, TokenVerdict]:
    """Verdicts by token digest."""
    rows = db.execute("SELECT token, kind, environment, checked FROM upstream_tokens").fetchall()
    return {token: (kind, environment, checked) for token, kind, environment, checked in rows}


def save(db: sqlite3.Connection, verdicts: dict[str, TokenVerdict]) -> None:
    """`verdicts` by token digest (inside the caller's transaction: Store.write)."""
    db.executemany(
        "INSERT OR REPLACE INTO upstream_tokens (token, kind, environment, checked) VALUES (?, ?, ?, ?)",
        [(token, *verdict) for token, verdict in verdicts.items()],
    )
