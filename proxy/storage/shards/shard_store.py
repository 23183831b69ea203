"""What an ingest worker's handlers reach as `app[STORE]`: a group commit into the worker's own
journal file. No merge into deltas and no fold here: the primary pulls the rows and folds them."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import IO

from proxy.storage.capacity.limits import PageBudget
from proxy.storage.database import open_writer
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import JournalEntry, clear_folded_journal
from proxy.storage.migrations import migrate
from proxy.storage.shards.reader import (
    backlog_bytes,
    next_shard_id,
    open_read_only,
    read_watermark,
    shard_name,
)
from proxy.storage.usage import impact
from proxy.storage.writer import GroupCommitWriter, StorageUnavailable

log = logging.getLogger(__name__)

REFUSED_FILE = "ingest-refused"  # exists in the data folder while the primary refuses ingest
REFUSAL_CHECK_SECONDS = 1.0
SYNC_SECONDS = 0.1  # the worker's backlog check; the primary pulls shards as often
BACKLOG_POLL_SECONDS = 0.02
ROOM_CHECK_SECONDS = 0.002
BACKLOG_WAIT_SECONDS = 10.0
LOCK_WAIT_SECONDS = 10.0
TRIM_SLICE_SECONDS = 0.002  # per transaction of trim_in_slices; its rows: MIN..MAX_TRIM_SLICE
MIN_TRIM_SLICE, MAX_TRIM_SLICE = 16, 8192


def refusal_marker(data_dir: Path) -> Path:
    return data_dir / REFUSED_FILE


class _NoMerge:
    """Stands in for Deltas in the worker's GroupCommitWriter: merging is the primary's job."""

    entries = 0

    def add(self, entry: JournalEntry) -> None:
        pass

    def __bool__(self) -> bool:
        return False


class ShardStore:
    """`max_db_size` and `ingest_processes` bound the worker's unfolded journal (backlog) to its
    share of what the primary can fold into the space it reserves (storage/capacity/limits.py); above it,
    ingest is refused until the primary has folded the rows (it pulls them every
    SYNC_SECONDS and folds at its own share)."""

    def __init__(self, shard_path: Path, primary_path: Path, synchronous: str,
                 max_db_size: int | None = None, ingest_processes: int = 2) -> None:
        self.path = shard_path
        self.name = shard_name(shard_path)
        self.primary_path = primary_path
        self.synchronous = synchronous
        self.writer: GroupCommitWriter | None = None
        self.impact_guard = impact.SeriesGuard(set())
        self.open_error: str | None = None
        self.refusing = False
        self.trimmed = 0
        self.max_db_size = max_db_size
        self.ingest_processes = ingest_processes
        self.backlog_limit: int | None = None
        self._backlog_at_sync = 0  # bytes above the watermark at the last sync
        self._synced_at = 0.0
        self._marks: deque[tuple[int, int]] = deque()  # (last journal id, bytes written by then): sync()
        self._unfolded_at_base = 0  # bytes above the watermark at the first mark, when summed
        self._summed_at = -1.0
        self._budget: PageBudget | None = None
        self._room = True
        self._room_checked_at = -1.0
        self.backlog_waits = 0  # requests that waited for the primary's fold
        self._trim_slice = MIN_TRIM_SLICE * 8  # rows; adapts to ~TRIM_SLICE_SECONDS
        self._db: sqlite3.Connection | None = None
        self._primary: sqlite3.Connection | None = None
        self._lock: IO[str] | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def open(self) -> None:
        await self._lock_shard()
        db = self._db = open_writer(self.path, self.synchronous)
        migrate(db)
        # The primary created its database (and the watermark table) before starting workers.
        self._primary = open_read_only(self.primary_path)
        watermark = read_watermark(self._primary, self.name)
        self.trimmed += clear_folded_journal(db, watermark)
        self.writer = GroupCommitWriter(db, _NoMerge(), next_shard_id(db, watermark))  # type: ignore[arg-type]
        self.writer.start()
        if self.max_db_size is not None:
            page_size = self._primary.execute("PRAGMA page_size").fetchone()[0]
            self._budget = PageBudget.for_size(self.max_db_size, page_size)
            self.backlog_limit = self._budget.allowance(self._budget.hard_pages, self.ingest_processes)
        self.sync(watermark)
        self._refresh_impact_series()
        self._check_refusal()

    async def _lock_shard(self) -> None:
        """Be the shard's only writer: a worker of a primary that was just killed may take a
        moment to die (PR_SET_PDEATHSIG); the kernel drops its lock when it does."""
        self._lock = open(self.path.with_suffix(".lock"), "a+")  # noqa: SIM115, ASYNC230 - held while open
        for _ in range(int(LOCK_WAIT_SECONDS / 0.05)):
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{self.path} is held by another process")

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.stop()  # commits what is queued: every 202 sent is on disk
        for db in (self._db, self._primary):
            if db is not None:
                db.close()
        self._db = self._primary = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def append(self, entries: list[JournalEntry], claim: IdempotencyClaim | None = None) -> bool:
        if self.writer is None:
            raise StorageUnavailable(self.open_error or "the store is not open", disk_full=False)
        if self.refusing or not self._primary_has_room():
            raise StorageUnavailable("the store is full (max_db_size)", disk_full=True)
        if self._over_backlog_limit():
            await self._wait_for_fold()
            if not self._primary_has_room():
                raise StorageUnavailable("the store is full (max_db_size)", disk_full=True)
        return await self.writer.append(entries, claim)

    async def _wait_for_fold(self) -> None:
        """Back-pressure: hold the request until the primary has folded enough of the backlog
        (it pulls every SYNC_SECONDS and folds at its share); 503 only if that takes too long."""
        assert self.backlog_limit is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKLOG_WAIT_SECONDS
        self.backlog_waits += 1
        while self._over_backlog_limit() and self._primary_has_room():
            if loop.time() > deadline:
                raise StorageUnavailable("the main process has not folded this worker's journal in time",
                                         disk_full=False)
            await asyncio.sleep(BACKLOG_POLL_SECONDS)
            if loop.time() - self._synced_at >= BACKLOG_POLL_SECONDS:
                self.sync()

    def _primary_has_room(self) -> bool:
        """The primary's admission check (pages in use at most its high-water mark), read from its
        database at most every ROOM_CHECK_SECONDS: once the primary folds into its reserve, the
        worker stops within that time instead of at the next refusal-marker check."""
        if self._budget is None:
            return True
        now = asyncio.get_running_loop().time()
        if now - self._room_checked_at >= ROOM_CHECK_SECONDS:
            assert self._primary is not None
            try:
                pages = self._primary.execute("PRAGMA page_count").fetchone()[0]
                free = self._primary.execute("PRAGMA freelist_count").fetchone()[0]
            except sqlite3.Error:
                return self._room  # the last answer; the marker file still applies
            self._room = pages - free <= self._budget.high_water_pages
            self.backlog_limit = self._budget.allowance(pages - free, self.ingest_processes)
            self._room_checked_at = now
        return self._room

    def backlog(self) -> int:
        """Unfolded bytes: exact at the last sync, plus everything committed since (an upper
        bound: rows folded since the sync still count until the next one)."""
        assert self.writer is not None
        written_at_sync = self._marks[-1][1]  # sync() leaves its own mark last
        return self._backlog_at_sync + self.writer.written_bytes - written_at_sync

    # --- upkeep ---------------------------------------------------------------------------

    def trim(self, max_ids: int | None = None) -> int:
        """Delete the rows the primary has folded (at or below its watermark for this shard): all,
        or the oldest `max_ids` ids' worth."""
        assert self._db is not None and self._primary is not None
        deleted = clear_folded_journal(self._db, read_watermark(self._primary, self.name), max_ids)
        self.trimmed += deleted
        return deleted

    async def trim_in_slices(self) -> int:
        """A fold's worth of 200-toggle rows took 10-25 ms to delete at once (their overflow pages
        are freed one by one). In slices of about TRIM_SLICE_SECONDS, the requests waiting on this
        loop run in between; the slice's size follows the rows' size. Returns how many slices."""
        slices = 0
        while True:
            started = time.perf_counter()
            deleted = self.trim(self._trim_slice)
            took = time.perf_counter() - started
            slices += 1
            if deleted < self._trim_slice:
                return slices
            if took > 2 * TRIM_SLICE_SECONDS:
                self._trim_slice = max(self._trim_slice // 2, MIN_TRIM_SLICE)
            elif took < TRIM_SLICE_SECONDS / 2:
                self._trim_slice = min(self._trim_slice * 2, MAX_TRIM_SLICE)
            await asyncio.sleep(0)

    def sync(self, watermark: int | None = None, exact: bool = False) -> None:
        """Measure the backlog against the primary's current watermark.

        Counted from marks, not from the rows: summing the backlog's row sizes ten times a second
        scanned up to a fold interval of rows each time. Each sync marks (last journal id, bytes
        written so far); the rows above a watermark are at most the bytes written after the newest
        mark at or below it. That over-counts by up to a sync interval's rows, so near the limit
        (`exact`) and at open the rows are summed, and that sum holds until the watermark passes."""
        assert self._db is not None and self._primary is not None and self.writer is not None
        if watermark is None:
            watermark = read_watermark(self._primary, self.name)
        written = self.writer.written_bytes
        marks = self._marks
        if exact or not marks:
            self._unfolded_at_base = backlog_bytes(self._db, watermark)
            marks.clear()
            self._summed_at = asyncio.get_running_loop().time()
        marks.append((self.writer.last_journal_id, written))
        while len(marks) > 1 and marks[1][0] <= watermark:
            marks.popleft()
        base_id, written_then = marks[0]
        if base_id <= watermark:  # only the base mark can be above it: watermarks only grow
            self._unfolded_at_base = 0
        self._backlog_at_sync = self._unfolded_at_base + written - written_then
        self._synced_at = asyncio.get_running_loop().time()

    def _over_backlog_limit(self) -> bool:
        if self.backlog_limit is None or self.backlog() < self.backlog_limit:
            return False
        # The marks may over-count: sum the rows (at most every poll) before holding anyone back,
        # or a worker could stop below the backlog at which the primary folds its share.
        if asyncio.get_running_loop().time() - self._summed_at >= BACKLOG_POLL_SECONDS:
            self.sync(exact=True)
        return self.backlog() >= self.backlog_limit

    def _refresh_impact_series(self) -> None:
        # Series admitted by the other processes; the limit is checked per process (docs/workers.md).
        assert self._primary is not None
        self.impact_guard.keys |= impact.SeriesGuard.load(self._primary).keys

    def _check_refusal(self) -> None:
        refusing = refusal_marker(self.path.parent).exists()
        if refusing != self.refusing:
            log.warning("worker %s: the primary %s ingest", self.name,
                        "refuses (store full)" if refusing else "accepts again")
        self.refusing = refusing

    async def run_upkeep(self, trim_interval: float) -> None:
        since_trim = 0.0
        while True:
            await asyncio.sleep(SYNC_SECONDS)
            self._check_refusal()
            since_trim += SYNC_SECONDS
            try:
                if since_trim >= trim_interval:
                    since_trim = 0.0
                    await self.trim_in_slices()
                    self._refresh_impact_series()
                self.sync()
            except sqlite3.Error as exc:  # e.g. the primary is mid-checkpoint: next time
                log.warning("worker %s: journal upkeep failed, will retry: %s", self.name, exc)
