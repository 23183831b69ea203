"""Group commit: every request queued while the previous commit ran shares the next one.

The writer calls sqlite3 directly on the event loop. A journal append of a few dozen rows takes well
under a millisecond; done on a helper thread it would wait for the GIL behind the busy loop for
tens to hundreds of milliseconds (docs/performance.md, "aiosqlite and the GIL"). There is no wait
window: a fixed window halved throughput in measurements; batches are capped instead.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from proxy.storage import idempotency, payloads
from proxy.storage.capacity.limits import StoreFull, is_disk_full
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import JournalEntry, VendorPayload, encode_entry
from proxy.storage.transaction import write_transaction
from proxy.storage.usage.aggregate import Deltas

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
class Durations:
    """Durations by bucket (non-cumulative, last slot = slower than every bound) and their sum."""

    bounds: tuple[float, ...] = COMMIT_SECONDS_BUCKETS
    counts: list[int] = field(default_factory=list)
    total_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def record(self, seconds: float) -> None:
        self.total_seconds += seconds
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1


@dataclass(slots=True)
class CommitStats:
    commits: int = 0
    requests: int = 0
    failed_commits: int = 0
    replays: int = 0  # requests answered from a remembered Idempotency-Key, not counted again
    # Cumulative counts of commits by how many requests they carried (for a histogram).
    batch_sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_BUCKETS) + 1))
    durations: Durations = field(default_factory=Durations)

    def record(self, size: int, seconds: float) -> None:
        self.commits += 1
        self.requests += size
        self.durations.record(seconds)
        for i, bound in enumerate(BATCH_SIZE_BUCKETS):
            if size <= bound:
                self.batch_sizes[i] += 1
                return
        self.batch_sizes[-1] += 1


class SpaceKeeper(Protocol):
    """What the writer needs from the store when the database has a size limit (storage/capacity/limits.py)."""

    fold_after_bytes: int

    def has_room(self) -> bool: ...

    def full_reason(self) -> str:
        """Why has_room() said no, for the log and the refused requests."""

    def make_room(self, attempt: int) -> bool:
        """After a full store refused a commit; True when the commit is worth retrying."""

    def fold(self) -> bool: ...

    def fits_staged(self, fold_bytes: int) -> bool:
        """Deltas that may add `fold_bytes` to the tables can be staged and written later, in
        chunks: what is already staged and they would still fold within the limit."""


# Deltas of this many keys (or fold_bytes at the space's bound) are staged by the folder soon after
# and written in paced chunks: a fold of one big post (50,000 new flags) in one
# transaction held the event loop for over a second, and in-memory deltas grew with every key.
STAGE_AFTER_KEYS = 20_000
# A fold of fewer keys is one transaction (a few ms); of more, it is staged and written in chunks.
STAGED_FOLD_KEYS = 2_000

_Queued = tuple[list[JournalEntry], IdempotencyClaim | None, "asyncio.Future[bool]"]


class GroupCommitWriter:
    def __init__(
        self, db: sqlite3.Connection, deltas: Deltas, next_journal_id: int,
        space: SpaceKeeper | None = None, idempotency_window: float = 24 * 3600.0,
        want_stage: Callable[[], None] | None = None, direct_payloads: bool = False,
    ) -> None:
        self._db = db
        # The primary's writer puts a vendor payload straight into inbound_payloads in the commit
        # that journals its request (storage/payloads.py): written once, not journaled, held in
        # the deltas and written again by the fold. An ingest worker's journal is all the primary
        # reads of it, so there a payload stays in the journal entry and the fold moves it.
        self._direct_payloads = direct_payloads
        # Ask the folder to stage the deltas soon (Store.want_stage): it does so between its own
        # transactions, so a commit never waits for a staging.
        self._want_stage = want_stage
        self.deltas = deltas
        self._next_id = next_journal_id
        self._space = space
        # Journal bytes this writer has committed, ever: an ingest worker bounds its unfolded
        # backlog with it (proxy/storage/shards/shard_store.py); the primary's own inline fold goes by
        # deltas.fold_bytes instead.
        self.written_bytes = 0
        self.idempotency_window = idempotency_window
        self._queue: list[_Queued] = []
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

    async def append(self, entries: list[JournalEntry], claim: IdempotencyClaim | None = None) -> bool:
        """Returns once `entries` are committed: True, or False when `claim`'s key was already
        recorded (the entries were counted before and are not stored again). Raises
        StorageUnavailable if nothing was committed."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((entries, claim, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # One more loop pass (no timer): requests whose bytes already arrived get parsed and
            # join this commit instead of each paying for its own fsync. More passes gained nothing.
            await asyncio.sleep(0)
            self._wake.clear()
            while self._queue:
                self._commit_next()
                if self._queue:
                    # Let handlers and the folder run between capped batches.
                    await asyncio.sleep(0)

    def _commit_next(self) -> None:
        batch = self._queue[:MAX_REQUESTS_PER_COMMIT]
        del self._queue[:MAX_REQUESTS_PER_COMMIT]
        try:
            self._commit_batch(batch)
        except Exception as exc:  # noqa: BLE001 - the writer must outlive any one batch
            # A bug here must not kill the writer task: every later post would wait forever.
            log.exception("journal commit of %d requests failed unexpectedly", len(batch))
            error = StorageUnavailable(f"unexpected error: {exc!r}", disk_full=False)
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(error)

    def _commit_batch(self, batch: list[_Queued]) -> None:
        space = self._space
        deltas = self.deltas
        over_bound = space is not None and deltas.fold_bytes >= space.fold_after_bytes
        if (self._want_stage is not None  # the primary's writer (an ingest worker's merges nothing)
                and deltas.keys >= (STAGED_FOLD_KEYS if over_bound else STAGE_AFTER_KEYS)
                and (space is None or space.fits_staged(deltas.fold_bytes))):
            self._want_stage()
        elif over_bound:
            # Fold inline while the fold still fits in the space reserved for it (limits.py): a
            # small fold is a few ms, and a large one only comes here near the limit.
            space.fold()
        started = time.perf_counter()
        attempt = 0
        while True:
            try:
                if space is not None and not space.has_room():
                    raise StoreFull(space.full_reason())
                stored = self._commit_once(batch)
                break
            except (sqlite3.Error, StoreFull) as exc:
                full = isinstance(exc, StoreFull) or is_disk_full(exc)
                if full and space is not None and space.make_room(attempt):
                    attempt += 1
                    continue
                self.stats.failed_commits += 1
                log.error("journal commit of %d requests failed: %s", len(batch), exc)
                error = StorageUnavailable(str(exc), full)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                return
        self.stats.record(len(batch), time.perf_counter() - started)
        self.last_journal_id = self._next_id - 1
        for index, (entries, _, future) in enumerate(batch):
            counted = index in stored
            if counted:
                for entry in entries:
                    if entry.payloads and self._direct_payloads:  # already in inbound_payloads
                        entry = msgspec.structs.replace(entry, payloads=[])
                    self.deltas.add(entry)
            else:
                self.stats.replays += 1
            if not future.done():
                future.set_result(counted)

    def _commit_once(self, batch: list[_Queued]) -> set[int]:
        """One transaction: journal rows of every request whose Idempotency-Key is new, and those
        keys. Returns the indexes of the stored requests; on error nothing is kept."""
        db = self._db
        first_id = self._next_id
        try:
            with write_transaction(db):
                claims = [claim for _, claim, _ in batch if claim is not None]
            # Keys already recorded, plus each key's first request in this batch: a concurrent
            # repeat in the same group commit is counted once too.
                taken = idempotency.remembered(db, claims, self.idempotency_window)
                stored: set[int] = set()
                rows = []
                direct: list[VendorPayload] = []
                new_claims = []
                for index, (entries, claim, _) in enumerate(batch):
                    if claim is not None:
                        if claim.scope in taken:
                            continue
                        taken.add(claim.scope)
                        new_claims.append(claim)
                    stored.add(index)
                    for entry in entries:
                        if entry.payloads and self._direct_payloads:
                            direct.extend(entry.payloads)
                            entry = msgspec.structs.replace(entry, payloads=[])
                        rows.append((self._next_id, encode_entry(entry)))
                        self._next_id += 1
                db.executemany("INSERT INTO journal (id, entry) VALUES (?, ?)", rows)
                if direct:
                    payloads.write_payloads(db, direct)
                written = sum(len(blob) for _, blob in rows)
                if new_claims:
                    idempotency.remember(db, new_claims)
        except BaseException:
            self._next_id = first_id
            raise
        self.written_bytes += written
        return stored
