"""The upstream outbox: every SQL statement the forwarder needs.

Pending counts (filled by the fold) are cut into persisted batches in one transaction that also
deletes them from pending_counts; only then is a batch sent. A batch is deleted only after the
upstream answered 2xx, so a crash at any point leaves each count either pending or in exactly one
batch, and a batch found at start-up is resent under its original id.

All methods run on the store's single writer connection, on the event loop, between awaits: they
cannot interleave with a group commit or a fold.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class OutboxItem:
    kind: str  # "metric", "application" or "impact"
    item: str  # the JSON object exactly as it goes on the wire
    yes: int = 0
    no: int = 0


@dataclass(slots=True)
class Batch:
    seq: int
    id: str
    environment: str
    created: float
    attempts: int
    items: list[OutboxItem]


@dataclass(slots=True)
class PendingRow:
    app_name: str
    feature_name: str
    hour: int
    yes: int
    no: int
    variants: str | None


@dataclass(slots=True)
class InstanceRow:
    app_name: str
    instance_id: str
    sdk_version: str | None
    strategies: str | None
    interval: float | None
    started: str | None
    created_at: float
    last_seen: float


@dataclass(slots=True)
class PendingImpact:
    app_name: str
    name: str
    labels: str
    row: bytes  # msgpack ImpactRow, merged since the last cut


# Turns one environment's pending rows, new instances and impact metrics into request-sized lists.
Chunker = Callable[[list[PendingRow], list[InstanceRow], list[PendingImpact]], list[list[OutboxItem]]]


class Outbox:
    def __init__(self, db: Callable[[], sqlite3.Connection]) -> None:
        self._db = db  # the store's writer connection, looked up when used (it opens later)

    @property
    def db(self) -> sqlite3.Connection:
        return self._db()

    # --- small persistent state: own instance id, watermarks, pauses, last sends ---------------

    def state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM forwarder_state WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_state(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO forwarder_state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def delete_state(self, key: str) -> None:
        self.db.execute("DELETE FROM forwarder_state WHERE key = ?", (key,))

    def stable_value(self, key: str, make: Callable[[], str]) -> str:
        """The stored value of key, created once with make() (e.g. the proxy's own instance id)."""
        value = self.state(key)
        if value is None:
            value = make()
            self.set_state(key, value)
        return value

    # --- cutting ----------------------------------------------------------------------------

    def environments(self) -> list[str]:
        rows = self.db.execute(
            "SELECT environment FROM pending_counts UNION SELECT environment FROM instances "
            "UNION SELECT environment FROM pending_impact_metrics "
            "UNION SELECT environment FROM outbox_batches ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    def cut(self, environment: str, now: float, chunker: Chunker, new_id: Callable[[], str],
            max_rows: int = 5000, instance_refresh: float = 0.0) -> tuple[int, bool]:
        """Move up to max_rows of the environment's pending rows, oldest hour first (and the
        instances to announce) into new batches.

        Returns (batches created, whether rows remain). One transaction: a row is in
        pending_counts or in a batch, never both, never neither. max_rows bounds how long the
        event loop (and so ingest) waits on one cut.

        Instances first seen since the last cut are always announced. Instances already announced
        are announced again (keeping their last-seen time fresh upstream) only once
        instance_refresh seconds have passed since the last such refresh: an SDK reporting every
        10 s would otherwise cost an application entry in every cut."""
        db = self.db
        watermark_key = f"apps_sent_until:{environment}"
        refresh_key = f"apps_refreshed_until:{environment}"
        db.execute("BEGIN IMMEDIATE")
        try:
            pending = [
                PendingRow(*r) for r in db.execute(
                    "SELECT app_name, feature_name, hour, yes, no, variants FROM pending_counts "
                    "WHERE environment = ? AND (yes <> 0 OR no <> 0) ORDER BY hour, app_name, feature_name "
                    "LIMIT ?",
                    (environment, max_rows + 1),
                )
            ]
            more = len(pending) > max_rows
            del pending[max_rows:]
            since = float(self.state(watermark_key) or 0)
            refreshed = float(self.state(refresh_key) or since)
            refresh = now - refreshed >= instance_refresh
            seen = [
                InstanceRow(*r) for r in db.execute(
                    "SELECT app_name, instance_id, sdk_version, strategies, interval, started, created_at, "
                    "last_seen FROM instances WHERE environment = ? AND last_seen > ? "
                    "ORDER BY app_name, instance_id",
                    (environment, refreshed if refresh else since),
                )
            ]
            instances = seen if refresh else [i for i in seen if i.created_at > since]
            impact = [
                PendingImpact(*r) for r in db.execute(
                    "SELECT app_name, name, labels, row FROM pending_impact_metrics WHERE environment = ? "
                    "ORDER BY app_name, name, labels",
                    (environment,),
                )
            ]
            chunks = chunker(pending, instances, impact) if pending or instances or impact else []
            for chunk in chunks:
                self._insert_batch(environment, now, chunk, new_id())
            db.executemany(
                "DELETE FROM pending_counts WHERE environment = ? AND app_name = ? AND feature_name = ? "
                "AND hour = ?",
                [(environment, r.app_name, r.feature_name, r.hour) for r in pending],
            )
            db.executemany(
                "DELETE FROM pending_impact_metrics WHERE environment = ? AND app_name = ? AND name = ? "
                "AND labels = ?",
                [(environment, r.app_name, r.name, r.labels) for r in impact],
            )
            # Rows with yes = 0 and no = 0 are never sent (Unleash drops them anyway).
            db.execute("DELETE FROM pending_counts WHERE environment = ? AND yes = 0 AND no = 0", (environment,))
            if seen:
                newest = max(i.last_seen for i in seen)
                self.set_state(watermark_key, repr(max(since, newest)))
                if refresh:
                    self.set_state(refresh_key, repr(newest))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return len(chunks), more

    def _insert_batch(self, environment: str, created: float, items: list[OutboxItem], batch_id: str) -> int:
        cursor = self.db.execute(
            "INSERT INTO outbox_batches (id, environment, created) VALUES (?, ?, ?)",
            (batch_id, environment, created),
        )
        seq = cursor.lastrowid
        self.db.executemany(
            "INSERT INTO outbox_items (batch_seq, position, kind, item, yes, no) VALUES (?, ?, ?, ?, ?, ?)",
            [(seq, n, i.kind, i.item, i.yes, i.no) for n, i in enumerate(items)],
        )
        return seq

    # --- sending ----------------------------------------------------------------------------

    def oldest_batches(self, environment: str, exclude: set[int], limit: int) -> list[Batch]:
        """The oldest batches of an environment not already being sent (splits keep their
        parent's age, so a backlog drains in the order it was cut)."""
        if limit <= 0:
            return []
        rows = self.db.execute(
            "SELECT seq, id, environment, created, attempts FROM outbox_batches WHERE environment = ? "
            "ORDER BY created, seq",
            (environment,),
        )
        found = []
        for row in rows:
            if row[0] in exclude:
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

    def pending_batch_count(self, environment: str | None = None) -> int:
        if environment is None:
            return self.db.execute("SELECT count(*) FROM outbox_batches").fetchone()[0]
        return self.db.execute(
            "SELECT count(*) FROM outbox_batches WHERE environment = ?", (environment,)
        ).fetchone()[0]

    def record_attempt(self, seq: int, error: str) -> None:
        self.db.execute(
            "UPDATE outbox_batches SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error, seq)
        )

    def delivered(self, batch: Batch, now: float) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (batch.seq,))
        db.execute("DELETE FROM outbox_batches WHERE seq = ?", (batch.seq,))
        self.set_state(f"last_success:{batch.environment}", repr(now))
        self.delete_state(f"paused:{batch.environment}")  # the upstream took it: not paused any more
        db.execute("COMMIT")

    def split(self, batch: Batch, halves: list[list[OutboxItem]], new_id: Callable[[], str]) -> list[Batch]:
        """Atomically replace a batch by smaller ones (same environment and age, new ids: they are
        different request bodies)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (batch.seq,))
        db.execute("DELETE FROM outbox_batches WHERE seq = ?", (batch.seq,))
        made = []
        for half in halves:
            batch_id = new_id()
            seq = self._insert_batch(batch.environment, batch.created, half, batch_id)
            made.append(Batch(seq, batch_id, batch.environment, batch.created, 0, half))
        db.execute("COMMIT")
        return made

    def dead_letter(self, batch: Batch, status: int | None, reason: str, now: float) -> int:
        """Move a batch the upstream will never accept into dead_letters; returns the rows moved."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO dead_letters (environment, kind, item, yes, no, status, reason, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(batch.environment, i.kind, i.item, i.yes, i.no, status, reason, now) for i in batch.items],
        )
        db.execute("DELETE FROM outbox_items WHERE batch_seq = ?", (batch.seq,))
        db.execute("DELETE FROM outbox_batches WHERE seq = ?", (batch.seq,))
        db.execute("COMMIT")
        return len(batch.items)

    def set_pause(self, environment: str, reason: str) -> None:
        self.set_state(f"paused:{environment}", reason)

    def clear_pause(self, environment: str) -> None:
        self.delete_state(f"paused:{environment}")


def status_report(db: sqlite3.Connection) -> dict:
    """What `metrics-proxy status` prints, read from any connection (it opens the file read-only)."""
    envs: dict[str, dict] = {}

    def env(name: str) -> dict:
        return envs.setdefault(name, {
            "pending_rows": 0, "pending_yes": 0, "pending_no": 0, "batches": 0, "batch_rows": 0,
            "batch_yes": 0, "batch_no": 0, "oldest": None, "last_success": None, "paused": None,
            "dead_letters": 0,
        })

    for name, rows, yes, no, oldest_hour in db.execute(
        "SELECT environment, count(*), sum(yes), sum(no), min(hour) FROM pending_counts GROUP BY environment"
    ):
        e = env(name)
        e.update(pending_rows=rows, pending_yes=yes, pending_no=no, oldest=oldest_hour)
    for name, batches, oldest in db.execute(
        "SELECT environment, count(*), min(created) FROM outbox_batches GROUP BY environment"
    ):
        e = env(name)
        e["batches"] = batches
        e["oldest"] = oldest if e["oldest"] is None else min(e["oldest"], oldest)
    for name, rows, yes, no in db.execute(
        "SELECT b.environment, count(*), sum(i.yes), sum(i.no) FROM outbox_items i "
        "JOIN outbox_batches b ON b.seq = i.batch_seq WHERE i.kind = 'metric' GROUP BY b.environment"
    ):
        env(name).update(batch_rows=rows, batch_yes=yes, batch_no=no)
    for name, rows in db.execute("SELECT environment, count(*) FROM dead_letters GROUP BY environment"):
        env(name)["dead_letters"] = rows
    instance_id = None
    for key, value in db.execute("SELECT key, value FROM forwarder_state"):
        kind, _, name = key.partition(":")
        if kind == "last_success":
            env(name)["last_success"] = float(value)
        elif kind == "paused":
            env(name)["paused"] = value
        elif kind == "instance_id":
            instance_id = value
    return {"instance_id": instance_id, "environments": dict(sorted(envs.items()))}


# --- custom metrics: latest value per series, sent to {upstream}/client/metrics/custom --------

def pending_custom_metrics(db: sqlite3.Connection, limit: int = 1000) -> list[tuple[str, str, float, float]]:
    """(name, labels JSON, value, updated) of series changed since they were last sent."""
    return db.execute(
        "SELECT name, labels, value, updated FROM pending_custom_metrics ORDER BY updated, name, labels LIMIT ?",
        (limit,),
    ).fetchall()


def custom_metrics_sent(db: sqlite3.Connection, rows: list[tuple[str, str, float, float]]) -> None:
    """Forget the sent values; a series updated meanwhile stays pending with its newer value."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany(
            "DELETE FROM pending_custom_metrics WHERE name = ? AND labels = ? AND updated <= ?",
            [(name, labels, updated) for name, labels, _value, updated in rows],
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def drop_pending_custom_metrics(db: sqlite3.Connection) -> int:
    return db.execute("DELETE FROM pending_custom_metrics").rowcount


class StatusUnavailable(Exception):
    """The database file cannot be read as an outbox (e.g. written before the outbox existed)."""


def read_status(path) -> dict:
    """status_report() of the database file at `path`, opened read-only beside a running proxy."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return status_report(db)
    except sqlite3.OperationalError as exc:
        raise StatusUnavailable(str(exc)) from exc
    finally:
        db.close()
