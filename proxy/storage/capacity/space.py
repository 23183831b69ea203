"""Keeping the store inside `max_db_size` and its filesystem's reserve: the admission check, the
fold that stays below the high-water mark, and the overflow policy. Why it works this way:
storage/capacity/limits.py and storage/capacity/disk_reserve.py."""

from __future__ import annotations

import logging
import sqlite3
from collections import Counter
from collections.abc import Callable

from proxy.storage.capacity.disk_reserve import DiskReserve
from proxy.storage.capacity.limits import PAGE_FILL_SLACK, SizeLimit, is_disk_full
from proxy.storage.capacity.overflow import drop_oldest_hour, drop_oldest_payloads

log = logging.getLogger(__name__)

DROP_REASON = "overflow_drop_oldest"
FULL_STORE = "database or disk is full (above the high-water mark)"
MAX_PAYLOAD_DROPS = 16  # per refused commit: the eighth dropped each time shrinks


class BoundedSpace:
    """The writer's SpaceKeeper for a store with a size limit."""

    def __init__(
        self, db: sqlite3.Connection, max_bytes: int, policy: str,
        fold: Callable[[], bool], has_unfolded: Callable[[], bool], staged_bytes: Callable[[], int] = lambda: 0,
        room_wanted: Callable[[], None] = lambda: None, *, reserve: DiskReserve,
    ) -> None:
        self._db = db
        self.limit = SizeLimit(db, max_bytes)
        self.reserve = reserve  # on the filesystem: while it is released, a floor on free space
        self.policy = policy
        self.fold = fold
        self._has_unfolded = has_unfolded
        self._staged_bytes = staged_bytes  # fold_bytes of staged deltas not written yet
        self._room_wanted = room_wanted  # a refused commit: history may give way (Store.give_way_to_ingest)
        self.fold_after_bytes = self.limit.budget.fold_after_bytes
        self.dropped_counts: Counter[str] = Counter()  # acknowledged counts deleted, by reason
        self.dropped_payloads: Counter[str] = Counter()  # acknowledged events kept whole deleted, by reason
        self.reserve_folds = 0  # folds that only fitted above the high-water mark

    def has_room(self) -> bool:
        return self.reserve.refusal() is None and self.limit.has_room()

    def full_reason(self) -> str:
        """Why has_room() said no: the filesystem, or the high-water mark."""
        return self.reserve.refusal() or FULL_STORE

    def fits_staged(self, fold_bytes: int) -> bool:
        """Staged chunks are written later, one transaction each: they and `fold_bytes` more must
        fit in what still folds below the high-water mark (or in the reserve, near the limit),
        page fill included, so that every staged chunk can be written."""
        pages, free = self.limit.pages()
        budget = self.limit.budget
        below = max(budget.high_water_pages - (pages - free), 0) * budget.page_size
        room = max(self.limit.budget.fold_after_bytes * PAGE_FILL_SLACK, below) // PAGE_FILL_SLACK
        return self._staged_bytes() + fold_bytes < room

    def make_room(self, attempt: int) -> bool:
        # Folding frees the journal's pages; dropping is the fold's business (fold_within_limit),
        # because only a fold can show that the space of dropped rows is reusable. Under "refuse"
        # read history gives way, outside the commit path (it deletes in chunks).
        if attempt == 0 and self.policy == "refuse":
            self._room_wanted()
        if attempt == 0 and self._has_unfolded() and self.fold():
            return True
        # Kept whole, events have no hours for the fold to drop: under "drop_oldest" the oldest of
        # them give way to the commit here.
        return self.policy == "drop_oldest" and attempt < MAX_PAYLOAD_DROPS and self._drop_oldest_payloads()

    def _drop_oldest_payloads(self) -> bool:
        with self.limit.hard_limit():
            dropped = drop_oldest_payloads(self._db)
        if not dropped:
            return False
        self.dropped_payloads[DROP_REASON] += dropped
        log.warning("store full: dropped the oldest %d stored events (LaunchDarkly SDK events) for new ingest",
                    dropped)
        return True

    def fold_within_limit(self, fold_once: Callable[[], None]) -> None:
        """Run `fold_once` (one transaction) below the high-water mark, dropping the oldest stored
        hours first under "drop_oldest"; into the reserve only when that is not enough. A fold that
        found the filesystem full runs again at once if that released the disk reserve."""
        while True:
            try:
                self.reserve.retry(fold_once)
                return
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if not is_disk_full(exc) or not self._drop_oldest():
                    break
        with self.limit.hard_limit():
            fold_once()
        self.reserve_folds += 1
        log.warning("a fold needed the reserve above the high-water mark: the store is full")

    def _drop_oldest(self) -> bool:
        if self.policy != "drop_oldest":
            return False
        with self.limit.hard_limit():
            dropped = drop_oldest_hour(self._db)
        if dropped is None:
            return False
        self.dropped_counts[DROP_REASON] += dropped.counts
        log.warning(
            "store full: dropped the oldest hour %d: %d undelivered rows (%d counts), %d history rows",
            dropped.hour, dropped.pending_rows, dropped.counts, dropped.history_rows,
        )
        return True
