"""Idempotency keys of bulk posts, for chained proxies (the receiving side of exactly-once).

A sender that retries a batch after an ambiguous failure sends the same `Idempotency-Key`. The key
is written in the same transaction as the journal rows of the first post, so after any crash
either both exist or neither does; a repeat within the window is answered 202 and not counted.
Keys are scoped by the caller's environment (one upstream token per environment).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from proxy.store.transaction import write_transaction

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    environment: str
    key: str
    at: float  # when the post was received; the key is remembered from then on

    @property
    def scope(self) -> tuple[str, str]:
        return self.environment, self.key


def remembered(db: sqlite3.Connection, claims: list[IdempotencyClaim], window: float) -> set[tuple[str, str]]:
    """The scopes among `claims` recorded within `window` seconds before each claim (call inside
    the transaction)."""
    found = set()
    for claim in claims:
        row = db.execute(
            "SELECT 1 FROM idempotency_keys WHERE environment = ? AND key = ? AND seen_at >= ?",
            (claim.environment, claim.key, claim.at - window),
        ).fetchone()
        if row is not None:
            found.add(claim.scope)
    return found


def remember(db: sqlite3.Connection, claims: list[IdempotencyClaim]) -> None:
    # An expired key that is used again starts a new window.
    db.executemany(
        """INSERT INTO idempotency_keys (environment, key, seen_at) VALUES (?, ?, ?)
           ON CONFLICT (environment, key) DO UPDATE SET seen_at = excluded.seen_at""",
        [(c.environment, c.key, c.at) for c in claims],
    )


def prune(db: sqlite3.Connection, before: float) -> int:
    """Forget keys recorded before `before`; returns how many."""
    with write_transaction(db):
        return db.execute("DELETE FROM idempotency_keys WHERE seen_at < ?", (before,)).rowcount
