"""Persisted client features documents: one row per environment, replaced whole.

Writes go through the Store's single writer connection on the event loop; each is one statement
in its own (autocommit) transaction, so it never lands inside a group commit or a fold.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredFeatures:
    environment: str
    document: bytes
    upstream_etag: str | None
    confirmed_at: float


class FeatureDocuments:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def load_all(self) -> list[StoredFeatures]:
        rows = self._db.execute(
            "SELECT environment, document, upstream_etag, confirmed_at FROM feature_documents ORDER BY environment"
        ).fetchall()
        return [StoredFeatures(env, bytes(doc), etag, at) for env, doc, etag, at in rows]

    def save(self, stored: StoredFeatures) -> None:
        """Durable on return (the connection's `synchronous` applies), before the document is served."""
        self._db.execute(
            "INSERT INTO feature_documents (environment, document, upstream_etag, confirmed_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (environment) DO UPDATE SET document = excluded.document, "
            "upstream_etag = excluded.upstream_etag, confirmed_at = excluded.confirmed_at",
            (stored.environment, stored.document, stored.upstream_etag, stored.confirmed_at),
        )

    def confirm(self, environment: str, at: float) -> None:
        """The upstream answered 304: the stored document is still current."""
        self._db.execute("UPDATE feature_documents SET confirmed_at = ? WHERE environment = ?", (at, environment))
