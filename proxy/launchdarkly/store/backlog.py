"""The LaunchDarkly SDK-event backlog as records, for `metrics-proxy export` and `import`
(proxy/commands/backlog.py):
- `launchdarkly.event_payload`: a payload acknowledged and stored, not cut into a batch yet, with
  what is kept with it (its path, headers, credential kind);
- `launchdarkly.event_batch`: a batch cut but not yet delivered, its events exactly as they go on the
  wire and its id, the X-LaunchDarkly-Payload-ID it is sent under (the importing proxy sends it under
  the same one, so LaunchDarkly applies it once whichever proxy got through).

`--environment` selects the streams of that LaunchDarkly environment. Import adds them inside the
caller's transaction; a batch whose id is already there is left alone.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

from proxy.launchdarkly.model.payload import VENDOR
from proxy.storage import payloads
from proxy.storage.outbox import OutboxItem, insert_batch

KINDS = ("launchdarkly.event_payload", "launchdarkly.event_batch")


def _ours(stream: str, environment: str | None) -> bool:
    return environment is None or stream.rpartition(":")[0] == environment


def _batches(db: sqlite3.Connection, environment: str | None) -> list[tuple[int, str, str, float]]:
    rows = db.execute("SELECT seq, id, environment, created FROM outbox_batches WHERE vendor = ? "
                      "ORDER BY created, seq", (VENDOR,)).fetchall()
    return [row for row in rows if _ours(row[2], environment)]


def export_records(db: sqlite3.Connection, environment: str | None = None) -> Iterator[dict[str, Any]]:
    last = 0
    while rows := payloads.oldest_after(db, VENDOR, last, 500):
        for row_id, stream, meta, body in rows:
            last = row_id
            if _ours(stream, environment):
                yield {"kind": "launchdarkly.event_payload", "stream": stream, "meta": bytes(meta).decode(),
                       "body": body.decode()}
    for seq, batch_id, stream, created in _batches(db, environment):
        items = [{"kind": kind, "item": item} for kind, item in db.execute(
            "SELECT kind, item FROM outbox_items WHERE batch_seq = ? ORDER BY position", (seq,))]
        yield {"kind": "launchdarkly.event_batch", "id": batch_id, "stream": stream, "created": created,
               "items": items}


def remove_exported(db: sqlite3.Connection, environment: str | None = None) -> None:
    last = 0
    while rows := payloads.oldest_after(db, VENDOR, last, 500, with_body=False):
        for row_id, stream, _, _ in rows:
            last = row_id
            if _ours(stream, environment):
                payloads.remove(db, row_id)
    for seq, _, _, _ in _batches(db, environment):
        db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (seq,))
        db.execute("DELETE FROM outbox_batches WHERE seq = ?", (seq,))


def import_record(db: sqlite3.Connection, r: dict[str, Any]) -> bool:
    if r["kind"] == "launchdarkly.event_payload":
        payloads.add(db, VENDOR, r["stream"], r["meta"].encode(), r["body"].encode())
        return True
    if r["kind"] == "launchdarkly.event_batch":
        if db.execute("SELECT 1 FROM outbox_batches WHERE id = ?", (r["id"],)).fetchone() is not None:
            return False
        items = [OutboxItem(i["kind"], i["item"]) for i in r["items"]]
        insert_batch(db, r["stream"], float(r["created"]), items, r["id"], VENDOR)
        return True
    raise ValueError(f"not a LaunchDarkly record: {r['kind']}")


def counts(r: dict[str, Any]) -> tuple[int, int]:
    """Events carry no Unleash-style yes/no counts."""
    return 0, 0
