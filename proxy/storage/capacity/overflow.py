"""The "drop_oldest" overflow policy: make room by deleting the oldest stored hour.

The hour goes from the outbox (`pending_counts`) and from the hourly history together: the two
grow in step, so dropping undelivered rows alone would leave the fold short of space until the
whole outbox was gone. History older than every undelivered hour (already forwarded) is dropped
first, which loses nothing still to be sent. Every undelivered count dropped is returned to be
counted by reason; nothing goes silently.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from proxy.storage.transaction import write_transaction


@dataclass(frozen=True, slots=True)
class DroppedHour:
    hour: int
    pending_rows: int
    counts: int  # undelivered yes + no deleted
    history_rows: int


def drop_oldest_hour(db: sqlite3.Connection) -> DroppedHour | None:
    """Delete every row of the oldest stored hour in one transaction; None when nothing is left."""
    with write_transaction(db):
        hour = db.execute(
            "SELECT min(h) FROM (SELECT min(hour) AS h FROM pending_counts"
            " UNION ALL SELECT min(hour) FROM hourly_counts)"
        ).fetchone()[0]
        if hour is None:
            return None
        pending = db.execute("DELETE FROM pending_counts WHERE hour = ? RETURNING yes, no", (hour,)).fetchall()
        history = db.execute("DELETE FROM hourly_counts WHERE hour = ?", (hour,)).rowcount
    return DroppedHour(hour, len(pending), sum(yes + no for yes, no in pending), history)


# Vendors whose stored payloads and undelivered batches give way under "drop_oldest" (their events
# are kept whole, not in hours): LaunchDarkly's SDK events (proxy/launchdarkly/model/payload.py).
# Never a write queue: a queued write is a change someone made, not usage.
PAYLOAD_VENDORS = ("launchdarkly.events",)
PAYLOAD_DROP_SHARE = 8  # the oldest eighth (at least one) of the payloads, and of the batches, at a time


def drop_oldest_payloads(db: sqlite3.Connection) -> int:
    """Delete the oldest share of the payload vendors' stored payloads and undelivered batches, in
    one transaction; returns the events given up (a stored payload counts as one)."""
    dropped = 0
    with write_transaction(db):
        for vendor in PAYLOAD_VENDORS:
            stored = db.execute("SELECT count(*) FROM inbound_payloads WHERE vendor = ?", (vendor,)).fetchone()[0]
            if stored:
                dropped += db.execute(
                    "DELETE FROM inbound_payloads WHERE id IN (SELECT id FROM inbound_payloads WHERE vendor = ? "
                    "ORDER BY id LIMIT ?)", (vendor, max(1, stored // PAYLOAD_DROP_SHARE))).rowcount
            batches = db.execute("SELECT seq FROM outbox_batches WHERE vendor = ? ORDER BY created, seq",
                                 (vendor,)).fetchall()
            for (seq,) in batches[:max(1, len(batches) // PAYLOAD_DROP_SHARE)] if batches else []:
                dropped += db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (seq,)).rowcount
                db.execute("DELETE FROM outbox_batches WHERE seq = ?", (seq,))
    return dropped
