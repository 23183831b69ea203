"""The bound on the store's size, enforced by SQLite itself (`PRAGMA max_page_count`).

The writer connection runs under a HIGH-WATER mark below `max_db_size`; the space above it, the
reserve (RESERVE_FRACTION, at least MIN_RESERVE_PAGES), exists so that every acknowledged journal
entry can still be folded into the count tables (each count row lands in up to five tables and
indexes, so a fold needs several times the journal's pages before it frees them):

- the journal append, the commit behind a 202, runs under the high-water mark, and is refused
  while the pages in use are above it (`has_room`): then only folds may grow the file;
- the fold runs under the high-water mark first; under "drop_oldest" it drops the oldest stored
  hour (storage/capacity/overflow.py) and tries again until it fits: SQLite reuses the space of deleted rows
  inside their pages, which a count of freed pages would not show, so only the fold itself can
  tell that a drop made enough room. When nothing more may be dropped it folds into the reserve,
  and ingest is refused from then on until pages are freed;
- the writer folds inline once the unfolded deltas' bound on the table bytes they add
  (`Deltas.fold_bytes`: new keys, variant names, instances, impact samples; counts added to known
  keys add nothing) reaches `fold_after_bytes`, the reserve over PAGE_FILL_SLACK (b-tree pages
  split half full), so a fold into the reserve fits. SDK keys are hot, so under steady traffic
  this rarely comes before the fold interval; bounding the journal's bytes instead folded every
  few MB of posts, ~300 ms each with 200-flag bodies. A fold that still does not fit rolls back
  whole and is retried later with the journal rows kept: an acknowledged count is never lost to
  a full disk.

The fold deletes the folded journal rows after writing the counts, so the journal's pages come
back free after every fold and the next appends do not need new pages.

The -wal file gets its own share of `max_db_size` (WAL_FRACTION, at most MAX_WAL_BYTES): SQLite
checkpoints at that size (or its default of 1000 pages, if smaller) and `journal_size_limit`
truncates the file back to the share when the log restarts. A reader that keeps an old snapshot
open stops checkpoints and lets the log grow, so before each journal append a log over its share
gets a PASSIVE checkpoint (it never waits for readers); if that cannot copy every frame, ingest is
refused until the reader lets go. The log can still pass its share by the transactions written
since the last check.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

RESERVE_FRACTION = 0.10
MIN_RESERVE_PAGES = 16
PAGE_FILL_SLACK = 2
# Ingest workers (proxy/workers/) hold journal rows the primary has not merged yet, so their share
# of the reserve is bounded on journal bytes: one journal byte becomes at most this many bytes of
# table rows (16 proved too tight for a full small store's fold, tests/test_disk_full.py).
FOLD_EXPANSION = 20
WAL_FRACTION = 0.125
MIN_WAL_PAGES = 8
MAX_WAL_BYTES = 64 * 1024 * 1024
DEFAULT_AUTOCHECKPOINT_PAGES = 1000


class StoreFull(Exception):
    """Pages in use above the high-water mark, or a -wal file over its share that cannot be
    checkpointed: no journal append until that changes."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@dataclass(frozen=True, slots=True)
class PageBudget:
    page_size: int
    hard_pages: int  # of the database file
    high_water_pages: int
    wal_pages: int  # the -wal file's share of max_db_size

    @property
    def fold_after_bytes(self) -> int:
        return (self.hard_pages - self.high_water_pages) * self.page_size // PAGE_FILL_SLACK

    def allowance(self, used_pages: int, ingest_processes: int) -> int:
        """With ingest workers: the unfolded journal bytes each worker may hold. The reserve's
        share, or while the store is far from full a share of what still folds below the
        high-water mark: the folds of all of them together then still fit."""
        reserve = (self.hard_pages - self.high_water_pages) * self.page_size
        below = max(self.high_water_pages - used_pages, 0) * self.page_size
        return max(reserve, below) // FOLD_EXPANSION // ingest_processes

    @classmethod
    def for_size(cls, max_bytes: int, page_size: int) -> PageBudget:
        total = max_bytes // page_size
        wal = min(max(int(total * WAL_FRACTION), MIN_WAL_PAGES), MAX_WAL_BYTES // page_size)
        hard = max(total - wal, 1)
        reserve = max(int(hard * RESERVE_FRACTION), MIN_RESERVE_PAGES)
        return cls(page_size, hard, max(hard - reserve, 1), wal)


class SizeLimit:
    """Sets and switches `max_page_count` on the writer connection.

    SQLite never lowers max_page_count below the current size, so a database that is already
    larger than the limit (the limit was lowered) accepts no new pages until rows are removed."""

    def __init__(self, db: sqlite3.Connection, max_bytes: int) -> None:
        self._db = db
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self.budget = budget = PageBudget.for_size(max_bytes, page_size)
        self._set(budget.high_water_pages)
        self.wal_path = db.execute("PRAGMA database_list").fetchone()[2] + "-wal"
        db.execute(f"PRAGMA journal_size_limit = {budget.wal_pages * page_size}")
        # Not above SQLite's default: the checkpoint runs inside a commit, on the event loop.
        db.execute(f"PRAGMA wal_autocheckpoint = {min(budget.wal_pages, DEFAULT_AUTOCHECKPOINT_PAGES)}")

    def _set(self, pages: int) -> None:
        self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    @contextlib.contextmanager
    def hard_limit(self, share: float = 1.0) -> Iterator[None]:
        """Let the enclosed transaction use the reserve above the high-water mark (the lower
        `share` of it)."""
        budget = self.budget
        self._set(budget.high_water_pages + int((budget.hard_pages - budget.high_water_pages) * share))
        try:
            yield
        finally:
            self._set(self.budget.high_water_pages)

    def has_room(self) -> bool:
        pages, free = self.pages()
        return pages - free <= self.budget.high_water_pages and self._wal_fits()

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.wal_path).st_size
        except FileNotFoundError:
            return 0

    def _wal_fits(self) -> bool:
        if self.wal_bytes() <= self.budget.wal_pages * self.budget.page_size:
            return True
        # Once every frame is in the database file, the next write restarts the log and
        # journal_size_limit cuts the file back to its share.
        _busy, frames, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return frames == copied

    def pages(self) -> tuple[int, int]:
        """(pages in the file, of which free)."""
        db = self._db
        return db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA freelist_count").fetchone()[0]
