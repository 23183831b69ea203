"""Vendor payloads kept whole: written by the fold (journal -> `inbound_payloads`), taken by the
vendor's cut, which moves them into outbox batches in its own transaction (for LaunchDarkly:
proxy/launchdarkly/store/events.py). A payload is in the journal, in this table or in a batch (or
dead-lettered, delivered), never two of them: the fold that writes it here drops its journal row in
the same transaction, and the cut that batches it deletes it here in the same transaction."""

from __future__ import annotations

import sqlite3

from proxy.storage.journal import VendorPayload


def write_payloads(db: sqlite3.Connection, payloads: list[VendorPayload]) -> None:
    if payloads:
        db.executemany("INSERT INTO inbound_payloads (vendor, stream, meta, body) VALUES (?, ?, ?, ?)",
                       [(p.vendor, p.stream, p.meta, p.body) for p in payloads])


def oldest(db: sqlite3.Connection, vendor: str, limit: int) -> list[tuple[int, str, bytes, bytes]]:
    """(id, stream, meta, body) of the vendor's oldest payloads."""
    return db.execute("SELECT id, stream, meta, body FROM inbound_payloads WHERE vendor = ? ORDER BY id LIMIT ?",
                      (vendor, limit)).fetchall()


def delete_through(db: sqlite3.Connection, vendor: str, last_id: int) -> int:
    return db.execute("DELETE FROM inbound_payloads WHERE vendor = ? AND id <= ?", (vendor, last_id)).rowcount


def count(db: sqlite3.Connection, vendor: str) -> int:
    return db.execute("SELECT count(*) FROM inbound_payloads WHERE vendor = ?", (vendor,)).fetchone()[0]
