"""The Unleash backlog as records, for `metrics-proxy export` and `import` (proxy/commands/backlog.py).

What is pending for the upstream, as plain JSON-ready dicts, each with its `kind`:
- `unleash.pending_count`: a row of pending_counts (counts folded but not yet cut into a batch);
- `unleash.outbox_batch`: a batch cut but not yet delivered, with its items exactly as they go on
  the wire and its id (the Idempotency-Key it is sent under: the importing proxy sends it under the
  same one);
- `unleash.pending_impact`: an impact-metric series merged since the last cut.

Import adds them to another store inside the caller's transaction: counts add to the rows there,
impact series merge as the fold merges them, a batch whose id is already there is left alone.
Instances (SDK registrations) are not carried: the SDKs announce themselves again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import msgspec

from proxy.storage.journal import ImpactRow
from proxy.storage.outbox import OutboxItem, insert_batch
from proxy.storage.usage.impact import merge

KINDS = ("unleash.pending_count", "unleash.outbox_batch", "unleash.pending_impact")

_decode_impact = msgspec.msgpack.Decoder(ImpactRow).decode
_encode_impact = msgspec.msgpack.Encoder().encode


def _where(environment: str | None, column: str = "environment") -> tuple[str, tuple]:
    return (f" WHERE {column} = ?", (environment,)) if environment is not None else ("", ())


def export_records(db: sqlite3.Connection, environment: str | None = None) -> Iterator[dict[str, Any]]:
    """Every pending Unleash record (of one environment, or all), oldest first within each kind."""
    where, args = _where(environment)
    for env, app, flag, hour, yes, no, variants in db.execute(
        "SELECT environment, app_name, feature_name, hour, yes, no, variants FROM pending_counts" + where
        + " ORDER BY environment, hour, app_name, feature_name", args,
    ):
        yield {"kind": "unleash.pending_count", "environment": env, "app_name": app, "feature_name": flag,
               "hour": hour, "yes": yes, "no": no, "variants": variants}
    # Only Unleash's batches: the outbox is shared with LaunchDarkly's (their own backlog module).
    batches = db.execute(
        "SELECT seq, id, environment, created FROM outbox_batches" + (where or " WHERE 1")
        + " AND vendor = 'unleash' ORDER BY created, seq", args,
    ).fetchall()
    for seq, batch_id, env, created in batches:
        items = [{"kind": kind, "item": item, "yes": yes, "no": no} for kind, item, yes, no in db.execute(
            "SELECT kind, item, yes, no FROM outbox_items WHERE batch_seq = ? ORDER BY position", (seq,))]
        yield {"kind": "unleash.outbox_batch", "id": batch_id, "environment": env, "created": created,
               "items": items}
    for env, app, name, labels, row in db.execute(
        "SELECT environment, app_name, name, labels, row FROM pending_impact_metrics" + where
        + " ORDER BY environment, app_name, name, labels", args,
    ):
        yield {"kind": "unleash.pending_impact", "environment": env, "app_name": app, "name": name,
               "labels": labels, "row": msgspec.to_builtins(_decode_impact(row))}


def remove_exported(db: sqlite3.Connection, environment: str | None = None) -> None:
    """Delete what export_records yields (export --move), inside the caller's transaction: the
    store is not served meanwhile, so that is exactly what was written out."""
    where, args = _where(environment)
    db.execute("DELETE FROM pending_counts" + where, args)
    mine = (where or " WHERE 1") + " AND vendor = 'unleash'"
    db.execute("DELETE FROM outbox_items WHERE batch_seq IN (SELECT seq FROM outbox_batches" + mine + ")", args)
    db.execute("DELETE FROM outbox_batches" + mine, args)
    db.execute("DELETE FROM pending_impact_metrics" + where, args)


def import_record(db: sqlite3.Connection, r: dict[str, Any]) -> bool:
    """Add one record to this store, inside the caller's transaction. False: a batch already here."""
    if r["kind"] == "unleash.pending_count":
        db.execute(
            "INSERT INTO pending_counts (environment, app_name, feature_name, hour, yes, no, variants) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (environment, app_name, feature_name, hour) DO UPDATE SET "
            "yes = yes + excluded.yes, no = no + excluded.no, variants = CASE WHEN excluded.variants IS NULL "
            "THEN variants ELSE variants_add(variants, excluded.variants) END",
            (r["environment"], r["app_name"], r["feature_name"], int(r["hour"]), int(r["yes"]), int(r["no"]),
             r["variants"]),
        )
        return True
    if r["kind"] == "unleash.outbox_batch":
        if db.execute("SELECT 1 FROM outbox_batches WHERE id = ?", (r["id"],)).fetchone() is not None:
            return False
        items = [OutboxItem(i["kind"], i["item"], int(i["yes"]), int(i["no"])) for i in r["items"]]
        insert_batch(db, r["environment"], float(r["created"]), items, r["id"])
        return True
    if r["kind"] == "unleash.pending_impact":
        key = (r["environment"], r["app_name"], r["name"], r["labels"])
        row = msgspec.convert(r["row"], ImpactRow)
        found = db.execute("SELECT row FROM pending_impact_metrics WHERE environment = ? AND app_name = ? "
                           "AND name = ? AND labels = ?", key).fetchone()
        if found is not None:
            row = merge(_decode_impact(found[0]), row)
        db.execute("INSERT OR REPLACE INTO pending_impact_metrics (environment, app_name, name, labels, row) "
                   "VALUES (?, ?, ?, ?, ?)", (*key, _encode_impact(row)))
        return True
    raise ValueError(f"not an Unleash record: {r['kind']}")


def counts(r: dict[str, Any]) -> tuple[int, int]:
    """The usage counts (yes, no) a record carries, for the export's totals."""
    if r["kind"] == "unleash.pending_count":
        return int(r["yes"]), int(r["no"])
    if r["kind"] == "unleash.outbox_batch":
        return sum(int(i["yes"]) for i in r["items"]), sum(int(i["no"]) for i in r["items"])
    return 0, 0
