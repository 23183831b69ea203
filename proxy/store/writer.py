"""Group commit: every request queued while the previous commit ran shares the next one.

The writer calls sqlite3 directly on the event loop. A journal append of a few dozen rows takes well
under a millisecond; done on a helper thread it would wait for the GIL behind the busy loop for
tens to hundreds of milliseconds (performance.md, "aiosqlite and the GIL"). There is no wait
window: a fixed window halved throughput in measurements; batches are capped instead.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import sqlite3
import time
from dataclasses import dataclass, field

from proxy.store.aggregate import Deltas
from proxy.store.journal import JournalEntry, encode_entry

log = logging.getLogger(__name__)

MAX_REQUESTS_PER_COMMIT = 512
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
COMMIT_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class StorageUnavailable(Exception):
    """The commit failed; nothing of the request was stored and it must not be acknowledged."""

    def __init__(self, message: str, disk_full: bool) -> None:
        super().__init__(message)
        self.disk_full = disk_full


@dataclass(slots=True)
class CommitStats:
    commits: int = 0
    requests: int = 0
    failed_commits: int = 0
    commit_seconds: float = 0.0
    # Cumulative counts of commits by how many requests they carried (for a histogram).
    batch_sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_BUCKETS) + 1))
    # Commits by duration (non-cumulative, last slot = slower than every bound).
    commit_durations: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_SECONDS_BUCKETS) + 1))

    def record(self, size: int, seconds: float) -> None:
        self.commits += 1
        self.requests += size
        self.commit_seconds += seconds
        self.commit_durations[bisect.bisect_left(COMMIT_SECONDS_BUCKETS, seconds)] += 1
        for i, bound in enumerate(BATCH_SIZE_BUCKETS):
            if size <= bound:
                self.batch_sizes[i] += 1
                return
        self.batch_sizes[-1] += 1


class GroupCommitWriter:
    def __init__(self, db: sqlite3.Connection, deltas: Deltas, next_journal_id: int) -> None:
        self._db = db
        self.deltas = deltas
        self._next_id = next_journal_id
        self._queue: list[tuple[list[JournalEntry], asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stats = CommitStats()
        self.last_journal_id = next_journal_id - 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit-writer")

    async def stop(self) -> None:
        """Commit whatever is queued, then stop."""
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        while self._queue:
            self._commit_next()

    async def append(self, entries: list[JournalEntry]) -> None:
        """Returns once `entries` are committed; raises StorageUnavailable if they are not."""
        future = asyncio.get_running_loop().create_future()
        self._queue.append((entries, future))
        self._wake.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._commit_next()
                if self._queue:
                    # Let handlers and the folder run between capped batches.
                    await asyncio.sleep(0)

    def _commit_next(self) -> None:
        batch = self._queue[:MAX_REQUESTS_PER_COMMIT]
        del self._queue[:MAX_REQUESTS_PER_COMMIT]
        first_id = self._next_id
        rows = []
        for entries, _ in batch:
            for entry in entries:
                rows.append((self._next_id, encode_entry(entry)))
                self._next_id += 1
        started = time.perf_counter()
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT INTO journal (id, entry) VALUES (?, ?)", rows)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._next_id = first_id
            self.stats.failed_commits += 1
            if db.in_transaction:
                db.execute("ROLLBACK")
            disk_full = isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)
            log.error("journal commit of %d requests failed: %s", len(batch), exc)
            error = StorageUnavailable(str(exc), disk_full)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats.record(len(batch), time.perf_counter() - started)
        self.last_journal_id = self._next_id - 1
        for entries, future in batch:
            for entry in entries:
                self.deltas.add(entry)
            if not future.done():
                future.set_result(None)
