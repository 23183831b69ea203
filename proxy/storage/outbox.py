"""The durable outbox: batches cut for an upstream, kept until it answers 2xx.

A vendor's cut (proxy/unleash/store/pending.py for Unleash) moves its pending rows into batches in
one transaction, with `insert_batch`; from then on a batch is only ever delivered (deleted),
split into smaller batches or dead-lettered, each in one transaction. A crash at any point leaves
every item in exactly one batch (or still pending), and a batch found at start-up is resent under
its original id. The delivery mechanism that drives these changes is proxy/forwarding/delivery.py.

All methods run on the store's single writer connection, on the event loop, between awaits: they
cannot interleave with a group commit or a fold. Every change may use the store's whole reserve
above the ingest high-water mark (Store.reserve), of which a vendor's cut takes only a share:
sending is what frees a full store, so a full store must not stop a split, a dead letter, an
attempt or a delivery from being recorded.

Each vendor's batches are its own (the `vendor` column; Outbox(store, vendor)): Unleash's forwarder
and LaunchDarkly's write queue share the tables and never see each other's batches, state keys or
dead letters.

A batch is named by its id, not by its seq alone: seq is an INTEGER PRIMARY KEY without
AUTOINCREMENT, so SQLite hands the highest seq out again once its row is deleted (a split deletes
its parent before inserting the halves). Each change of a batch matches both and raises BatchGone,
changing nothing, unless it found exactly the row it was given.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from proxy.storage.capacity.limits import is_disk_full
from proxy.storage.store import Store
from proxy.storage.transaction import write_transaction
from proxy.storage.writer import StorageUnavailable

P = ParamSpec("P")
R = TypeVar("R")


class BatchGone(Exception):
    """The batch is no longer in the outbox as it was read (delivered, split or dead-lettered
    since): the change was not made."""


def _storage_errors(method: Callable[P, R]) -> Callable[P, R]:
    """SQLite's errors leave the outbox as StorageUnavailable, the storage layer's one error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc), is_disk_full(exc)) from exc

    return wrapper


def _change(method: Callable[..., R]) -> Callable[..., R]:
    """An outbox write: within the store's reserve (never nested: Store.reserve is not
    reentrant, so a change calls the module's functions, not another change), and made again at
    once when it found the filesystem full and that released the disk reserve (each change is one
    transaction, or one statement: a failed one left nothing)."""

    @functools.wraps(method)
    def wrapper(self: Outbox, *args: object, **kwargs: object) -> R:
        self._store.writer_connection()  # a closed store raises StorageUnavailable before the reserve is touched
        with self._store.reserve():
            return self._store.disk_reserve.retry(lambda: method(self, *args, **kwargs))

    return _storage_errors(wrapper)


@dataclass(slots=True)
class OutboxItem:
    kind: str  # what the vendor's sender makes of it, e.g. "metric", "application" or "impact"
    item: str  # the JSON object exactly as it goes on the wire
    yes: int = 0  # the usage counts it carries, for status and dead-letter accounting
    no: int = 0


@dataclass(slots=True)
class Batch:
    seq: int
    id: str
    environment: str
    created: float
    attempts: int
    items: list[OutboxItem]


# --- used inside a vendor's cut transaction ------------------------------------------------------

def state(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM forwarder_state WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def set_state(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute(
        "INSERT INTO forwarder_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def delete_state(db: sqlite3.Connection, key: str) -> None:
    db.execute("DELETE FROM forwarder_state WHERE key = ?", (key,))


UNLEASH = "unleash"


def insert_batch(db: sqlite3.Connection, environment: str, created: float, items: list[OutboxItem],
                 batch_id: str, vendor: str = UNLEASH) -> int:
    cursor = db.execute(
        "INSERT INTO outbox_batches (id, environment, created, vendor) VALUES (?, ?, ?, ?)",
        (batch_id, environment, created, vendor),
    )
    seq = cursor.lastrowid
    assert seq is not None
    db.executemany(
        "INSERT INTO outbox_items (batch_seq, position, kind, item, yes, no) VALUES (?, ?, ?, ?, ?, ?)",
        [(seq, n, i.kind, i.item, i.yes, i.no) for n, i in enumerate(items)],
    )
    return seq


def _delete_batch(db: sqlite3.Connection, batch: Batch) -> None:
    """Delete exactly `batch` and its items, or raise BatchGone (inside the caller's transaction,
    which it then rolls back)."""
    if db.execute("DELETE FROM outbox_batches WHERE seq = ? AND id = ?", (batch.seq, batch.id)).rowcount != 1:
        raise BatchGone(f"batch {batch.id} (seq {batch.seq}) is no longer in the outbox")
    deleted = db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (batch.seq,)).rowcount
    if deleted != len(batch.items):
        raise BatchGone(f"batch {batch.id} holds {deleted} items, not the {len(batch.items)} it was read with")


class Outbox:
    """One vendor's part of the outbox tables of a Store."""

    def __init__(self, store: Store, vendor: str = UNLEASH) -> None:
        self._store = store
        self.vendor = vendor

    def _key(self, kind: str, environment: str) -> str:
        """A per-environment state key; another vendor's carry its name, so they never meet Unleash's."""
        return f"{kind}:{environment}" if self.vendor == UNLEASH else f"{self.vendor}.{kind}:{environment}"

    @property
    def db(self) -> sqlite3.Connection:
        return self._store.writer_connection()  # looked up when used: the store opens after the outbox is made

    # --- small persistent state: own instance id, watermarks, pauses, last sends ---------------

    @_storage_errors
    def state(self, key: str) -> str | None:
        return state(self.db, key)

    @_change
    def set_state(self, key: str, value: str) -> None:
        set_state(self.db, key, value)

    @_storage_errors
    def stable_value(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of key, created once with make() (e.g. the proxy's own instance id)."""
        value = self.state(key)
        if value is None:
            value = make()
            self.set_state(key, value)
        return value

    @_change
    def set_pause(self, environment: str, reason: str) -> None:
        set_state(self.db, self._key("paused", environment), reason)

    @_change
    def clear_pause(self, environment: str) -> None:
        delete_state(self.db, self._key("paused", environment))

    # --- sending ----------------------------------------------------------------------------

    @_storage_errors
    def environments(self) -> list[str]:
        """Environments with batches waiting."""
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT environment FROM outbox_batches WHERE vendor = ? ORDER BY 1", (self.vendor,))]

    @_storage_errors
    def oldest_batches(self, environment: str, exclude: set[str], limit: int) -> list[Batch]:
        """The oldest batches of an environment whose ids are not in `exclude` (those being sent;
        splits keep their parent's age, so a backlog drains in the order it was cut)."""
        if limit <= 0:
            return []
        rows = self.db.execute(
            "SELECT seq, id, environment, created, attempts FROM outbox_batches WHERE environment = ? "
            "AND vendor = ? ORDER BY created, seq",
            (environment, self.vendor),
        )
        found = []
        for row in rows:
            if row[1] in exclude:
                continue
            found.append(Batch(*row, items=self._items(row[0])))
            if len(found) == limit:
                break
        return found

    def _items(self, seq: int) -> list[OutboxItem]:
        return [
            OutboxItem(*r) for r in self.db.execute(
                "SELECT kind, item, yes, no FROM outbox_items WHERE batch_seq = ? ORDER BY position", (seq,)
            )
        ]

    @_storage_errors
    def pending_batch_count(self, environment: str | None = None) -> int:
        if environment is None:
            return self.db.execute("SELECT count(*) FROM outbox_batches WHERE vendor = ?", (self.vendor,)).fetchone()[0]
        return self.db.execute(
            "SELECT count(*) FROM outbox_batches WHERE environment = ? AND vendor = ?", (environment, self.vendor)
        ).fetchone()[0]

    @_change
    def record_attempt(self, batch: Batch, error: str) -> None:
        updated = self.db.execute(
            "UPDATE outbox_batches SET attempts = attempts + 1, last_error = ? WHERE seq = ? AND id = ?",
            (error, batch.seq, batch.id),
        ).rowcount
        if updated != 1:
            raise BatchGone(f"batch {batch.id} (seq {batch.seq}) is no longer in the outbox")

    @_change
    def delivered(self, batch: Batch, now: float) -> None:
        with write_transaction(self.db) as db:
            _delete_batch(db, batch)
            set_state(db, self._key("last_success", batch.environment), repr(now))
            delete_state(db, self._key("paused", batch.environment))  # the upstream took it: not paused any more

    @_change
    def split(self, batch: Batch, halves: list[list[OutboxItem]], new_id: Callable[[], str]) -> list[Batch]:
        """Atomically replace a batch by smaller ones (same environment and age, new ids: they are
        different request bodies)."""
        made = []
        with write_transaction(self.db) as db:
            _delete_batch(db, batch)
            for half in halves:
                batch_id = new_id()
                seq = insert_batch(db, batch.environment, batch.created, half, batch_id, self.vendor)
                made.append(Batch(seq, batch_id, batch.environment, batch.created, 0, half))
        return made

    @_change
    def dead_letter(self, batch: Batch, status: int | None, reason: str, now: float) -> int:
        """Move a batch the upstream will never accept into dead_letters; returns the items moved."""
        with write_transaction(self.db) as db:
            db.executemany(
                "INSERT INTO dead_letters (environment, kind, item, yes, no, status, reason, created, vendor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(batch.environment, i.kind, i.item, i.yes, i.no, status, reason, now, self.vendor)
                 for i in batch.items],
            )
            _delete_batch(db, batch)
        return len(batch.items)
