"""The Store: the only way the rest of the proxy touches SQLite.

It owns the writer connection (the group commit, folds, pruning, the outbox) and the read-only
connection. Other rooms hand it the storage layer's query functions (`read`, `write`, `on_writer`)
and never see a connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from proxy.storage import health, idempotency, integrity, payloads
from proxy.storage.capacity.disk_reserve import DiskReserve, WriterConnection
from proxy.storage.capacity.limits import is_disk_full
from proxy.storage.capacity.space import BoundedSpace
from proxy.storage.database import durability, log_sqlite_version, open_reader, open_writer
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import JournalEntry, clear_folded_journal, decode_entry
from proxy.storage.migrations import migrate
from proxy.storage.shards.reader import ShardReader
from proxy.storage.transaction import write_transaction
from proxy.storage.usage import impact, staging, usage_totals
from proxy.storage.usage.aggregate import Deltas, write_deltas
from proxy.storage.usage.minute_rollups import write_minute_rollups
from proxy.storage.usage.retention import RetentionPolicy, give_way, prune_history
from proxy.storage.writer import STAGED_FOLD_KEYS, Durations, GroupCommitWriter, StorageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

PULL_SLICE_BYTES = 64 * 1024  # of worker rows merged per loop pass: ~1 ms (ShardReader.pull_slice)
REPLAY_CHUNK = 10_000
# The folder stages a fold of STAGED_FOLD_KEYS or more (writer.py) and writes it in chunks of about
# STAGED_CHUNK_KEYS (~5 ms each here); smaller folds stay one transaction.
STAGED_CHUNK_KEYS = 250
STAGED_CHUNK_PAUSE = 0.01  # seconds between chunks: 12,800 keys take ~0.8 s of a 5 s fold_interval
KEY_PRUNE_MAX_INTERVAL = 3600.0  # seconds between prunings of expired Idempotency-Keys, at most
FOLD_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _write_folded(db: sqlite3.Connection, deltas: Deltas) -> None:
    """Everything a fold writes for `deltas`, inside the caller's transaction."""
    write_deltas(db, deltas)
    usage_totals.write_usage_totals(db, deltas)
    impact.write_impact(db, deltas.impact)
    write_minute_rollups(db, deltas)
    payloads.write_payloads(db, deltas.payloads)


def _write_staged_chunk(db: sqlite3.Connection, deltas: Deltas, seq: int) -> None:
    """A staged chunk into the tables, and out of staging, inside the caller's transaction."""
    _write_folded(db, deltas)
    staging.drop_chunk(db, seq)


class Store:
    def __init__(
        self, path: Path, synchronous: str = "FULL", *, max_db_size: int | None = None,
        overflow_policy: str = "refuse", idempotency_window: float = 24 * 3600.0,
        ingest_processes: int = 1, forwarding: bool = True, disk_reserve: int | None = None,
    ) -> None:
        if disk_reserve and max_db_size is None:
            raise ValueError("disk_reserve needs max_db_size: ingest is refused through its admission check")
        self.path = path
        self.synchronous = synchronous
        self.max_db_size = max_db_size
        self.overflow_policy = overflow_policy
        self.idempotency_window = idempotency_window
        # With ingest workers, each process may hold an equal share of the journal bytes whose
        # fold fits the space reserved for it (PageBudget.allowance, storage/capacity/limits.py).
        self.ingest_processes = ingest_processes
        # An upstream takes the outbox's pending counts. Without one they are kept as long as the
        # history (an upstream configured later sends what is still there) and give way with it
        # (storage/usage/retention.py): nothing else would ever remove them.
        self.forwarding = forwarding
        self.space: BoundedSpace | None = None  # with max_db_size: the bound and overflow policy
        # Bytes held in a file on the data folder's filesystem, given back when it is full
        # (storage/capacity/disk_reserve.py). None: the file is left as it is (a command beside a
        # running proxy); 0: no reserve.
        self.disk_reserve = DiskReserve(path.parent, disk_reserve)
        self._db: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self.writer: GroupCommitWriter | None = None
        self.folds = 0
        self._staged = False  # fold_staging may hold chunks (storage/usage/staging.py)
        self.staged_fold_bytes = 0  # Deltas.fold_bytes of the staged chunks not written yet
        self._chunked_fold = asyncio.Lock()
        self._fold_wanted = asyncio.Event()  # wakes the folder before its interval
        self._stage_wanted = False  # the writer's deltas are large: stage them at the next chance
        self.fold_durations = Durations(FOLD_SECONDS_BUCKETS)
        # Changes whenever the tables the read endpoints answer from may have changed (a fold, a
        # pruning chunk); read answers cached under one value are never served under another.
        self.data_version = 0
        self.replayed_entries = 0
        self.open_error: str | None = None  # why open() failed, for the readiness probe
        self.impact_guard = impact.SeriesGuard(set())
        self.quarantined: list[Path] = []  # corrupt databases moved aside at start (integrity.py)
        # Read-history rows deleted, by (table, reason): "retention", or "space" (given way to ingest).
        self.pruned_rows: Counter[tuple[str, str]] = Counter()
        self._room_wanted = asyncio.Event()  # the store refused ingest: the pruner looks for room now
        # Journal files of ingest workers beside the database, folded in with the own journal.
        self.shards = ShardReader(path.parent, watch=ingest_processes > 1)

    # --- life cycle -------------------------------------------------------------------------

    async def open(self) -> None:
        started = time.perf_counter()
        log_sqlite_version()
        self.disk_reserve.open()  # before the database may take the room it needs
        problem = integrity.check_before_open(self.path)
        if problem is not None:
            self.quarantined.append(integrity.quarantine(self.path, problem))
        try:
            db = self._open_writer_and_replay()
        except sqlite3.DatabaseError as exc:
            if not integrity.is_corruption(exc):
                raise
            self._discard_writer()
            self.quarantined.append(integrity.quarantine(self.path, str(exc)))
            db = self._open_writer_and_replay()
        self.writer.start()
        self._reader = await open_reader(self.path)
        log.info(
            "store %s open in %.0f ms (%s; replayed %d journal entries)",
            self.path, (time.perf_counter() - started) * 1000,
            ", ".join(f"{k}={v}" for k, v in durability(db).items()), self.replayed_entries,
        )

    def _open_writer_and_replay(self) -> sqlite3.Connection:
        db = self._db = open_writer(self.path, self.synchronous, factory=WriterConnection)
        assert isinstance(db, WriterConnection)
        db.disk_reserve = self.disk_reserve  # a write that finds the filesystem full releases it
        migrate(db)
        if self.max_db_size is not None:
            self.space = BoundedSpace(
                db, self.max_db_size, self.overflow_policy, self.fold,
                lambda: self.writer is not None and bool(self.writer.deltas), lambda: self.staged_fold_bytes,
                self._room_wanted.set, reserve=self.disk_reserve,
            )
            self.space.fold_after_bytes //= self.ingest_processes
        self._staged = staging.any_staged(db)  # a staged fold a crash interrupted: written below
        deltas = Deltas()
        last_id = self._replay(db, deltas)
        self.shards.load(db)
        self.replayed_entries += self.shards.pull(deltas)
        self.writer = GroupCommitWriter(db, deltas, last_id + 1, self.space, self.idempotency_window,
                                        want_stage=self.want_stage, direct_payloads=True)
        self.writer.last_journal_id = last_id
        self.fold()
        self.impact_guard = impact.SeriesGuard.load(db)  # after the fold: replayed series count too
        return db

    def _discard_writer(self) -> None:
        """Forget a connection to a file about to be quarantined."""
        if self._db is not None:
            self._db.close()
        self._db, self.writer, self.space = None, None, None
        self.replayed_entries = 0

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
        self.shards.close()
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None
            try:
                integrity.mark_clean_shutdown(self.path)
            except OSError as exc:  # a full filesystem: the next start checks the pages instead
                log.warning("could not mark the clean shutdown (the next start runs quick_check): %s", exc)

    @property
    def is_open(self) -> bool:
        return self._db is not None or self._reader is not None

    # --- writing ----------------------------------------------------------------------------

    async def append(self, entries: list[JournalEntry], claim: IdempotencyClaim | None = None) -> bool:
        """Durably record entries; returns after the commit (raises StorageUnavailable). False
        when `claim`'s Idempotency-Key was recorded before: acknowledged, not counted again."""
        if self.writer is None:
            raise StorageUnavailable(self.open_error or "the store is not open", disk_full=False)
        return await self.writer.append(entries, claim)

    def prune_idempotency_keys(self, now: float) -> int:
        assert self._db is not None
        return idempotency.prune(self._db, now - self.idempotency_window)

    async def run_key_pruner(self, now: Callable[[], float]) -> None:
        """Forget expired Idempotency-Keys now and then. Expired keys are already ignored when a post
        is checked (storage/idempotency.py): pruning only gives their space back, so it runs rarely."""
        interval = min(self.idempotency_window / 4, KEY_PRUNE_MAX_INTERVAL)
        while True:
            await asyncio.sleep(interval)
            try:
                pruned = self.prune_idempotency_keys(now())
            except sqlite3.Error as exc:  # e.g. the disk is full: try again next time
                log.warning("pruning idempotency keys failed: %s", exc)
                continue
            if pruned:
                log.info("forgot %d idempotency keys older than the window", pruned)

    def fold(self) -> bool:
        """Write the in-memory deltas to the tables and drop the folded journal rows, atomically
        (after what a staged fold left, so counts land in the order they were acknowledged).

        Returns False when the transaction failed (the deltas and the journal both stay, so
        nothing is lost and the next fold tries again)."""
        writer = self.writer
        if writer is None or self._db is None:
            return True
        if not self._write_staged():
            return False
        self.shards.pull(writer.deltas)
        return self._fold_pulled()

    def _fold_pulled(self) -> bool:
        """fold() once the staged chunks are written and every shard row is pulled."""
        writer = self.writer
        assert writer is not None
        if not writer.deltas and not self.shards.has_unrecorded:
            return True
        deltas = writer.deltas
        return self._fold_journal(lambda db: _write_folded(db, deltas))

    async def fold_in_chunks(self) -> bool:
        """The fold of the folder and of readers. Staged chunks (left by the writer, or by a
        large fold here: STAGED_FOLD_KEYS or more) are written a chunk per transaction, pausing
        between chunks so that requests are answered meanwhile (storage/usage/staging.py).

        One at a time (the folder, readers and the shard puller all fold): a second one waits for
        the first instead of writing its chunks at once, the stall staging is there to avoid."""
        async with self._chunked_fold:
            if self._stage_wanted and not self.stage_deltas():
                return False
            if not await self._write_staged_paced():
                return False
            await self._pull_in_slices()
            return await self._fold_in_chunks()

    async def _pull_in_slices(self) -> None:
        while self.writer is not None and self.shards.pull_slice(self.writer.deltas, PULL_SLICE_BYTES):
            await asyncio.sleep(0)

    async def _fold_in_chunks(self) -> bool:
        # Called right after the last slice (no await between): every shard row is pulled.
        writer = self.writer
        if writer is None or self._db is None:
            return True
        if writer.deltas.count_keys() < STAGED_FOLD_KEYS:
            return self._fold_pulled()
        if not self.stage_deltas():
            return False
        return await self._write_staged_paced()

    def want_stage(self) -> None:
        """The writer's deltas are large (writer.STAGE_AFTER_KEYS, or the space's fold bound): the
        folder stages them at once, or between two chunks of the fold it is writing."""
        self._stage_wanted = True
        self._fold_wanted.set()

    def stage_deltas(self) -> bool:
        """Move the in-memory deltas into staged chunks, in one short transaction that also drops
        their journal rows (instances and impact samples, few rows, are written at once); the
        folder writes the chunks later, a transaction each, so memory and every transaction stay
        bounded whatever one post carries."""
        writer = self.writer
        assert writer is not None
        self._stage_wanted = False
        deltas = writer.deltas
        chunks, rest = deltas.count_chunks(STAGED_CHUNK_KEYS), deltas.without_counts()

        def stage(db: sqlite3.Connection) -> None:
            _write_folded(db, rest)
            staging.stage(db, chunks)

        if not self._fold_journal(stage):
            return False
        if chunks:
            self._staged = True
            self.staged_fold_bytes += deltas.fold_bytes
            self._fold_wanted.set()
        return True

    async def _write_staged_paced(self) -> bool:
        while self._staged:
            if self._stage_wanted and not self.stage_deltas():
                return False
            if not self._write_staged(chunks=1):
                return False
            # A request needs a few loop passes (read, commit, answer): a pause rather than a
            # single pass keeps each of them from meeting a chunk on every pass.
            await asyncio.sleep(STAGED_CHUNK_PAUSE)
        return True

    def _write_staged(self, chunks: int | None = None) -> bool:
        """Write staged chunks into the tables, each in its own transaction: all of them, or up to
        `chunks`. False if a transaction failed (the chunk stays staged for the next try)."""
        db = self._db
        assert db is not None
        written = 0
        while self._staged and (chunks is None or written < chunks):
            found = staging.first_chunk(db)
            if found is None:
                self._staged = False
                self.staged_fold_bytes = 0
                break
            seq, chunk = found
            write_chunk = partial(_write_staged_chunk, deltas=Deltas.from_chunk(chunk), seq=seq)
            if not self._write_transaction(write_chunk, f"writing staged fold chunk {seq}"):
                return False
            written += 1
        return True

    def _fold_journal(self, write: Callable[[sqlite3.Connection], None]) -> bool:
        """One transaction: `write` the deltas (or stage them), drop the journal rows they came
        from and record the shard marks; then start new deltas."""
        writer = self.writer
        assert writer is not None

        def fold_once(db: sqlite3.Connection) -> None:
            write(db)
            clear_folded_journal(db, writer.last_journal_id)
            self.shards.record(db)

        started = time.perf_counter()
        if not self._write_transaction(fold_once, f"fold of {writer.deltas.entries} journal entries"):
            return False
        self.shards.committed()
        writer.deltas = Deltas()
        self.folds += 1
        self.fold_durations.record(time.perf_counter() - started)
        return True

    def _write_transaction(self, body: Callable[[sqlite3.Connection], None], what: str) -> bool:
        """`body` in one write transaction, within the size limit's rules for folds."""
        db = self._db
        assert db is not None

        def once() -> None:
            with write_transaction(db):
                body(db)

        try:
            if self.space is not None:
                self.space.fold_within_limit(once)
            else:
                once()
        except sqlite3.Error as exc:
            log.error("%s failed, will retry: %s", what, exc)
            return False
        finally:
            # Also after a failure: drop_oldest may have committed the deletion of an hour first.
            self.data_version += 1
        return True

    async def pull_shards(self) -> bool:
        """Bring the workers' new journal rows into the deltas, in slices; True when a fold is due.

        With a size limit every process may hold its allowance of unfolded journal
        (PageBudget.allowance): the writer folds its own at it, and the workers' rows are folded
        once one shard's reach its allowance, so that a fold always fits (as with one process)
        and a worker waiting at its allowance moves on soon."""
        await self._pull_in_slices()
        space = self.space
        if space is None or self.writer is None:
            return False
        pages, free = space.limit.pages()
        allowance = space.limit.budget.allowance(pages - free, self.ingest_processes)
        # Per shard, not summed: with two workers, one at its allowance while the other lags would
        # wait for the periodic fold if the sum had to reach both allowances.
        return max(self.shards.unfolded_bytes.values(), default=0) >= allowance

    async def run_shard_puller(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            if await self.pull_shards():
                await self.fold_in_chunks()

    def reserve(self, share: float = 1.0) -> contextlib.AbstractContextManager[None]:
        """Let the enclosed writes use the space kept above the ingest high-water mark (the lower
        `share` of it). Not reentrant: the inner one's exit would end the outer one's reserve.

        For work that frees space once it is done (cutting pending counts into outbox batches
        that are then delivered and deleted): without it a full store could never drain."""
        if self.space is None:
            return contextlib.nullcontext()
        return self.space.limit.hard_limit(share)

    async def run_folder(self, interval: float) -> None:
        """Fold every `interval` seconds, and as soon as the writer staged deltas."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fold_wanted.wait(), interval)
            self._fold_wanted.clear()
            await self.fold_in_chunks()
            await self.disk_reserve.maintain()  # allocated again once the filesystem has room

    async def prune(self, policy: RetentionPolicy, now: float) -> dict[str, int]:
        """Drop read history older than the policy (never the outbox); rows deleted per table."""
        assert self._db is not None, "store is not open"
        deleted = await prune_history(self._db, policy, now, changed=self._history_changed)
        self.pruned_rows.update({(table, "retention"): rows for table, rows in deleted.items()})
        return deleted

    def _history_changed(self) -> None:
        self.data_version += 1

    async def run_pruner(self, policy: RetentionPolicy, now: Callable[[], float], interval: float) -> None:
        """Prune by the retention policy every `interval` seconds, and give history's room to new
        ingest as soon as a full store refuses it (overflow_policy "refuse")."""
        while True:
            try:
                deleted = await self.prune(policy, now())
            except sqlite3.Error as exc:
                log.error("pruning read history failed, will retry: %s", exc)
            else:
                if any(deleted.values()):
                    log.info("pruned read history: %s", deleted)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room_wanted.wait(), interval)
            self._room_wanted.clear()
            await self.give_way_to_ingest(now())

    async def give_way_to_ingest(self, now: float) -> dict[str, int]:
        """While a full store refuses ingest, history that is not waiting to be sent gives way, the
        older half of its hours at a time: the read history shrinks rather than acknowledged traffic
        being refused until retention catches up. Rows deleted, by table."""
        given: Counter[str] = Counter()
        while self._db is not None and self.refusing_ingest():
            try:
                deleted = give_way(self._db, now, keep_pending=self.forwarding)
            except sqlite3.Error as exc:
                log.error("making room for ingest failed, will retry: %s", exc)
                break
            if not deleted:
                break
            given.update(deleted)
            self.data_version += 1
            await asyncio.sleep(0)
        if given:
            self.pruned_rows.update({(table, "space"): rows for table, rows in given.items()})
            log.warning("store full: the oldest read history gave way to new ingest (%s)", dict(given))
        return dict(given)

    # --- the door: every other room's SQL runs through these -------------------------------

    async def read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`await query(connection, *args)` on the read-only connection, after a fold, so it sees
        every acknowledged count. Queries live in the storage layer (this package and each vendor's
        `store` package); their callers only pass them here."""
        await self.fold_in_chunks()
        return await query(self.reader, *args)

    def write(self, body: Callable[..., T], *args: Any) -> T:
        """`body(connection, *args)` on the writer connection, in one write transaction that is
        rolled back on any error. SQLite's errors come out as StorageUnavailable (nothing of the
        body was kept), as does a store that is not open; `body`'s own exceptions pass as they are."""
        db = self.writer_connection()

        def once() -> T:
            with write_transaction(db):
                return body(db, *args)

        try:
            return self.disk_reserve.retry(once)
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc), is_disk_full(exc)) from exc

    def on_writer(self, query: Callable[..., T], *args: Any) -> T:
        """`query(connection, *args)` on the writer connection outside a transaction: single
        statements (each its own autocommit transaction) and reads that must see the writer's
        latest state. SQLite's errors come out as StorageUnavailable."""
        try:
            return query(self.writer_connection(), *args)
        except sqlite3.Error as exc:
            raise StorageUnavailable(str(exc), is_disk_full(exc)) from exc

    def writer_connection(self) -> sqlite3.Connection:
        """The writer connection, for the storage layer's own modules (outbox.py); StorageUnavailable
        while the store is not open."""
        if self._db is None:
            raise StorageUnavailable(self.open_error or "the store is not open", disk_full=False)
        return self._db

    @property
    def db(self) -> sqlite3.Connection:
        """The single writer connection, for the storage layer's own modules (outbox.py) and tests."""
        assert self._db is not None, "store is not open"
        return self._db

    @property
    def reader(self) -> aiosqlite.Connection:
        """The read-only connection, for the storage layer's own modules and tests."""
        assert self._reader is not None, "store is not open"
        return self._reader

    def pragma(self, name: str) -> object:
        assert self._db is not None
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    async def totals(self) -> list[tuple[str, str, str, int, int]]:
        """(environment, app, feature, yes, no) over all stored hours."""
        return await self.read(usage_totals.totals)

    async def busiest_usage(self, limit: int) -> tuple[list[tuple[str, str, int, int]], int]:
        return await self.read(usage_totals.busiest_usage, limit)

    async def pending_by_environment(self) -> list[tuple[str, int, int, int]]:
        return await self.read(health.pending_by_environment)

    async def pending_metric_series(self) -> tuple[int, list[tuple[str, int]]]:
        return await self.read(health.pending_metric_series)

    def size_on_disk(self) -> int:
        return health.size_on_disk(self.path)

    def check_writable(self, now: float) -> str | None:
        """None when a commit works now, else why not."""
        if self._db is None or self.writer is None:
            return self.open_error or "the database is not open"
        if (refusal := self.disk_reserve.refusal()) is not None:
            return refusal
        if self.refusing_ingest():
            return "the store is full (max_db_size); new ingest is refused until space returns"
        # A fresh probe rather than the last journal commit's outcome: a proxy taken out of
        # rotation after a failed commit gets no traffic, and must still turn ready once it can.
        try:
            health.probe_write(self._db, now)
        except sqlite3.Error as exc:
            return f"the database cannot write: {exc}"
        return None

    def refusing_ingest(self) -> bool:
        """Journal appends are refused: the store is full under overflow_policy "refuse", or the
        filesystem is, under either policy (its reserve is released and less than it is free)."""
        if self.space is None:
            return False
        if self.overflow_policy == "refuse":
            return not self.space.has_room()
        return self.disk_reserve.refusal() is not None

    async def impact_series(self) -> list[tuple[str, impact.ImpactRow]]:
        return await self.read(impact.all_impact)
