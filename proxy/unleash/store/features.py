"""Persisted client features documents: one row per environment, replaced whole.

Each write is one statement in its own (autocommit) transaction on the Store's writer connection,
on the event loop, so it never lands inside a group commit or a fold.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from proxy.storage import Store


@dataclass(frozen=True, slots=True)
class StoredFeatures:
    environment: str
    document: bytes
    upstream_etag: str | None
    confirmed_at: float


def _load_all(db: sqlite3.Connection) -> list[StoredFeatures]:
    rows = db.execute(
        "SELECT environment, document, upstream_etag, confirmed_at FROM feature_documents ORDER BY environment"
    ).fetchall()
    return [StoredFeatures(env, bytes(doc), etag, at) for env, doc, etag, at in rows]


def _save(db: sqlite3.Connection, stored: StoredFeatures) -> None:
    db.execute(
        "INSERT INTO feature_documents (environment, document, upstream_etag, confirmed_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (environment) DO UPDATE SET document = excluded.document, "
        "upstream_etag = excluded.upstream_etag, confirmed_at = excluded.confirmed_at",
        (stored.environment, stored.document, stored.upstream_etag, stored.confirmed_at),
    )


def _confirm(db: sqlite3.Connection, environment: str, at: float) -> None:
    db.execute("UPDATE feature_documents SET confirmed_at = ? WHERE environment = ?", (at, environment))


class FeatureDocuments:
    """The stored documents of a Store (its errors come out as StorageUnavailable)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def load_all(self) -> list[StoredFeatures]:
        return self._store.on_writer(_load_all)

    def save(self, stored: StoredFeatures) -> None:
        """Durable on return (the connection's `synchronous` applies), before the document is served."""
        self._store.on_writer(_save, stored)

    def confirm(self, environment: str, at: float) -> None:
        """The upstream answered 304: the stored document is still current."""
        self._store.on_writer(_confirm, environment, at)
