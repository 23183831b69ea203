"""The Store: the only way the rest of the proxy touches SQLite."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite

from proxy.store import queries
from proxy.store.aggregate import Deltas, write_deltas
from proxy.store.database import durability, log_sqlite_version, open_reader, open_writer
from proxy.store.journal import JournalEntry, decode_entry
from proxy.store.migrations import migrate
from proxy.store.minute_rollups import write_minute_rollups
from proxy.store.retention import RetentionPolicy, prune_history
from proxy.store.writer import GroupCommitWriter

log = logging.getLogger(__name__)

REPLAY_CHUNK = 10_000


class Store:
    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._db: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self.writer: GroupCommitWriter | None = None
        self.folds = 0
        self.replayed_entries = 0

    # --- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        started = time.perf_counter()
        log_sqlite_version()
        db = self._db = open_writer(self.path, self.synchronous)
        migrate(db)
        deltas = Deltas()
        last_id = self._replay(db, deltas)
        self.writer = GroupCommitWriter(db, deltas, last_id + 1)
        self.writer.last_journal_id = last_id
        self.fold()
        self.writer.start()
        self._reader = await open_reader(self.path)
        log.info(
            "store %s open in %.0f ms (%s; replayed %d journal entries)",
            self.path, (time.perf_counter() - started) * 1000,
            ", ".join(f"{k}={v}" for k, v in durability(db).items()), self.replayed_entries,
        )

    def _replay(self, db: sqlite3.Connection, deltas: Deltas) -> int:
        """Re-add journal entries that were acknowledged but not folded before the last stop."""
        last_id = 0
        while True:
            rows = db.execute(
                "SELECT id, entry FROM journal WHERE id > ? ORDER BY id LIMIT ?", (last_id, REPLAY_CHUNK)
            ).fetchall()
            if not rows:
                return last_id
            for row_id, blob in rows:
                deltas.add(decode_entry(blob))
                last_id = row_id
            self.replayed_entries += len(rows)

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.stop()
        if self._db is not None:
            self.fold()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- writing ----------------------------------------------------------------------------

    async def append(self, entries: list[JournalEntry]) -> None:
        """Durably record entries; returns after the commit (raises StorageUnavailable)."""
        assert self.writer is not None
        await self.writer.append(entries)

    def fold(self) -> bool:
        """Write the in-memory deltas to the tables and drop the folded journal rows, atomically.

        Returns False when the transaction failed (the deltas and the journal both stay, so
        nothing is lost and the next fold tries again)."""
        writer, db = self.writer, self._db
        if writer is None or db is None or not writer.deltas:
            return True
        try:
            db.execute("BEGIN IMMEDIATE")
            write_deltas(db, writer.deltas)
            write_minute_rollups(db, writer.deltas)
            db.execute("DELETE FROM journal WHERE id <= ?", (writer.last_journal_id,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            log.error("fold of %d journal entries failed, will retry: %s", writer.deltas.entries, exc)
            return False
        writer.deltas = Deltas()
        self.folds += 1
        return True

    async def run_folder(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.fold()

    async def prune(self, policy: RetentionPolicy, now: float) -> dict[str, int]:
        """Drop read history older than the policy (never the outbox); rows deleted per table."""
        assert self._db is not None, "store is not open"
        return await prune_history(self._db, policy, now)

    async def run_pruner(self, policy: RetentionPolicy, now: Callable[[], float], interval: float) -> None:
        while True:
            try:
                deleted = await self.prune(policy, now())
            except sqlite3.Error as exc:
                log.error("pruning read history failed, will retry: %s", exc)
            else:
                if any(deleted.values()):
                    log.info("pruned read history: %s", deleted)
            await asyncio.sleep(interval)

    # --- reading ----------------------------------------------------------------------------

    @property
    def reader(self) -> aiosqlite.Connection:
        assert self._reader is not None, "store is not open"
        return self._reader

    async def feature_toggle_windows(self, now: float) -> dict[str, dict[str, dict[str, int]]]:
        self.fold()  # reads see every acknowledged count
        return await queries.feature_toggle_windows(self.reader, now)

    async def totals(self) -> list[tuple[str, str, str, int, int]]:
        """(environment, app, feature, yes, no) over all stored hours."""
        self.fold()
        return await queries.totals(self.reader)

    def pragma(self, name: str) -> object:
        assert self._db is not None
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]
