"""Idempotency keys of bulk posts, for chained proxies (the receiving side of exactly-once).

A sender that retries a batch after an ambiguous failure sends the same `Idempotency-Key`. The key
is written in the same transaction as the journal rows of the first post, so after any crash
either both exist or neither does; a repeat within the window is answered 202 and not counted.
Keys are scoped by the caller's environment (one upstream token per environment).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from proxy.storage.transaction import write_transaction

MAX_KEY_LENGTH = 255
LOOKUP_CHUNK = 500  # bound parameters per query (SQLite allows 32766)


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    environment: str
    key: str
    at: float  # when the post was received; the key is remembered from then on
    # How long a repeat is recognised, when not the store's idempotency_window (LaunchDarkly's
    # Payload-IDs: an SDK resends within seconds, and a day of them would be a large table).
    window: float | None = None

    @property
    def scope(self) -> tuple[str, str]:
        return self.environment, self.key


def remembered(db: sqlite3.Connection, claims: list[IdempotencyClaim], window: float) -> set[tuple[str, str]]:
    """The scopes among `claims` recorded within `window` seconds before each claim (call inside
    the transaction). One primary-key query per environment and LOOKUP_CHUNK keys, since a group
    commit carries up to 512 claims."""
    found: set[tuple[str, str]] = set()
    since = {claim.scope: claim.at - (window if claim.window is None else claim.window) for claim in claims}
    for environment in sorted({env for env, _ in since}):
        keys = sorted(key for env, key in since if env == environment)
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i:i + LOOKUP_CHUNK]
            rows = db.execute(
                "SELECT key, seen_at FROM idempotency_keys"
                f" WHERE environment = ? AND key IN ({','.join('?' * len(chunk))})",
                (environment, *chunk),
            )
            found.update((environment, key) for key, seen_at in rows if seen_at >= since[environment, key])
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


def prune_scope(db: sqlite3.Connection, prefix: str, before: float) -> int:
    """Forget the keys of environments named `prefix...` recorded before `before` (claims with a
    window of their own, pruned by their owner), inside the caller's transaction."""
    return db.execute("DELETE FROM idempotency_keys WHERE environment >= ? AND environment < ? AND seen_at < ?",
                      (prefix, prefix + "\U0010ffff", before)).rowcount
