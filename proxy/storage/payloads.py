"""Vendor payloads kept whole until the vendor's cut moves them into outbox batches (for
LaunchDarkly: proxy/launchdarkly/store/events.py), in its own transaction.

The primary's group-commit writer inserts a payload here in the commit that acknowledges its request
(storage/writer.py); an ingest worker journals it, and the fold that drops the journal row writes it
here in the same transaction. So a payload is in a journal, in this table or in a batch (then
delivered or dead-lettered), never two of them, whenever a crash comes."""

from __future__ import annotations

import sqlite3
import zlib

from proxy.storage.journal import VendorPayload

# Bodies are kept deflated (level 1: ~10 us for 5 kB of SDK events, a tenth of the bytes): JSON
# events repeat their keys, and every byte stored is written to the WAL, checkpointed and deleted.
COMPRESSION_LEVEL = 1


def deflate(body: bytes) -> bytes:
    return zlib.compress(body, COMPRESSION_LEVEL)


def inflate(stored: bytes) -> bytes:
    return zlib.decompress(stored)


def write_payloads(db: sqlite3.Connection, payloads: list[VendorPayload]) -> None:
    if payloads:
        db.executemany("INSERT INTO inbound_payloads (vendor, stream, meta, body) VALUES (?, ?, ?, ?)",
                       [(p.vendor, p.stream, p.meta, deflate(p.body)) for p in payloads])


def add(db: sqlite3.Connection, vendor: str, stream: str, meta: bytes, body: bytes) -> None:
    """One payload (an imported backlog's), inside the caller's transaction."""
    write_payloads(db, [VendorPayload(vendor, stream, meta, body)])


def oldest(db: sqlite3.Connection, vendor: str, limit: int,
           with_body: bool = True) -> list[tuple[int, str, bytes, bytes]]:
    """(id, stream, meta, body) of the vendor's oldest payloads (body b"" unless `with_body`)."""
    return oldest_after(db, vendor, 0, limit, with_body)


def oldest_after(db: sqlite3.Connection, vendor: str, after_id: int, limit: int,
                 with_body: bool = True) -> list[tuple[int, str, bytes, bytes]]:
    if not with_body:
        return [(*row, b"") for row in db.execute(
            "SELECT id, stream, meta FROM inbound_payloads WHERE vendor = ? AND id > ? ORDER BY id LIMIT ?",
            (vendor, after_id, limit))]
    return [(row_id, stream, meta, inflate(body)) for row_id, stream, meta, body in db.execute(
        "SELECT id, stream, meta, body FROM inbound_payloads WHERE vendor = ? AND id > ? ORDER BY id LIMIT ?",
        (vendor, after_id, limit))]


def body_of(db: sqlite3.Connection, row_id: int) -> bytes:
    return inflate(db.execute("SELECT body FROM inbound_payloads WHERE id = ?", (row_id,)).fetchone()[0])


def remove(db: sqlite3.Connection, row_id: int) -> None:
    db.execute("DELETE FROM inbound_payloads WHERE id = ?", (row_id,))


def delete_through(db: sqlite3.Connection, vendor: str, last_id: int) -> int:
    return db.execute("DELETE FROM inbound_payloads WHERE vendor = ? AND id <= ?", (vendor, last_id)).rowcount


def delete_oldest(db: sqlite3.Connection, vendor: str, limit: int) -> int:
    return db.execute("DELETE FROM inbound_payloads WHERE id IN (SELECT id FROM inbound_payloads WHERE vendor = ? "
                      "ORDER BY id LIMIT ?)", (vendor, limit)).rowcount


def count(db: sqlite3.Connection, vendor: str) -> int:
    return db.execute("SELECT count(*) FROM inbound_payloads WHERE vendor = ?", (vendor,)).fetchone()[0]
