"""The bound on the database size, enforced by SQLite itself (`PRAGMA max_page_count`).

The writer connection runs under a HIGH-WATER mark below `max_db_size`; the space above it, the
reserve (RESERVE_FRACTION, at least MIN_RESERVE_PAGES), exists so that every acknowledged journal
entry can still be folded into the count tables (each count row lands in up to five tables and
indexes, so a fold needs several times the journal's pages before it frees them):

- the journal append, the commit behind a 202, runs under the high-water mark, and is refused
  while the pages in use are above it (`has_room`): then only folds may grow the file;
- the fold runs under the high-water mark first; under "drop_oldest" it drops the oldest stored
  hour (store/overflow.py) and tries again until it fits: SQLite reuses the space of deleted rows
  inside their pages, which a count of freed pages would not show, so only the fold itself can
  tell that a drop made enough room. When nothing more may be dropped it folds into the reserve,
  and ingest is refused from then on until pages are freed;
- the writer folds inline once the unfolded journal reaches `fold_after_bytes` (the reserve over
  FOLD_EXPANSION, a generous bound on the bytes of table rows one journal byte becomes), so a
  fold into the reserve fits. One that still does not rolls back whole and is retried later with
  the journal rows kept: an acknowledged count is never lost to a full disk.

The fold deletes the folded journal rows after writing the counts, so the journal's pages come
back free after every fold and the next appends do not need new pages.

The limit bounds the database file; the -wal file is bounded separately by checkpoints and
`journal_size_limit` (store/database.py).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

RESERVE_FRACTION = 0.10
MIN_RESERVE_PAGES = 16
FOLD_EXPANSION = 16


class StoreFull(Exception):
    """The pages in use are above the high-water mark: no journal append until some are freed."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@dataclass(frozen=True, slots=True)
class PageBudget:
    page_size: int
    hard_pages: int
    high_water_pages: int

    @property
    def fold_after_bytes(self) -> int:
        return (self.hard_pages - self.high_water_pages) * self.page_size // FOLD_EXPANSION

    @classmethod
    def for_size(cls, max_bytes: int, page_size: int) -> PageBudget:
        hard = max(max_bytes // page_size, 1)
        reserve = max(int(hard * RESERVE_FRACTION), MIN_RESERVE_PAGES)
        return cls(page_size, hard, max(hard - reserve, 1))


class SizeLimit:
    """Sets and switches `max_page_count` on the writer connection.

    SQLite never lowers max_page_count below the current size, so a database that is already
    larger than the limit (the limit was lowered) accepts no new pages until rows are removed."""

    def __init__(self, db: sqlite3.Connection, max_bytes: int) -> None:
        self._db = db
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        self.budget = PageBudget.for_size(max_bytes, page_size)
        self._set(self.budget.high_water_pages)

    def _set(self, pages: int) -> None:
        self._db.execute(f"PRAGMA max_page_count = {int(pages)}")

    @contextlib.contextmanager
    def hard_limit(self) -> Iterator[None]:
        """Let the enclosed transaction use the reserve above the high-water mark."""
        self._set(self.budget.hard_pages)
        try:
            yield
        finally:
            self._set(self.budget.high_water_pages)

    def has_room(self) -> bool:
        pages, free = self.pages()
        return pages - free <= self.budget.high_water_pages

    def pages(self) -> tuple[int, int]:
        """(pages in the file, of which free)."""
        db = self._db
        return db.execute("PRAGMA page_count").fetchone()[0], db.execute("PRAGMA freelist_count").fetchone()[0]
