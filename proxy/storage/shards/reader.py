"""Journal shards: the journal files ingest workers write (`ingest-<k>.db`), read by the primary.

Each worker is the only writer of its shard and numbers its rows with strictly increasing ids.
The primary never writes a shard (SQLite 3.40 must not have two writers on one WAL database): it
reads the rows above what it has pulled through a read-only connection, merges them into the
deltas of the next fold, and that fold's transaction records the last id per shard in
`shard_watermarks`. So a shard row is counted iff its id is above the committed watermark when
the fold that includes it commits: a crash between pull and fold loses only the in-memory pull,
and the next start pulls the same rows again. The worker deletes its rows at or below the
watermark (ShardStore.trim_in_slices), and never reuses an id (next_shard_id).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from proxy.storage.database import BUSY_TIMEOUT_MS, memory_pragmas
from proxy.storage.journal import decode_entry
from proxy.storage.usage.aggregate import Deltas

log = logging.getLogger(__name__)

SHARD_GLOB = "ingest-*.db"
PULL_CHUNK = 10_000
SLICE_ROWS = 16  # rows per read when a pull is sliced (pull_slice)


def shard_name(path: Path) -> str:
    return path.stem  # "ingest-1"


def open_read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                         check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000)
    db.execute("PRAGMA query_only = ON")
    for pragma in memory_pragmas():
        db.execute(pragma)
    return db


def committed_watermarks(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT shard, last_id FROM shard_watermarks").fetchall())


class ShardReader:
    """The primary's side: pulls every shard found in the data folder (leftovers of a run with
    more workers included) and records what it pulled in the fold's transaction."""

    def __init__(self, data_dir: Path, watch: bool = True) -> None:
        self.data_dir = data_dir
        # With workers running, new shard files appear (a worker starting): look on every pull.
        # Without, only leftovers of an earlier run can exist: looking once, at start-up, is enough.
        self.watch = watch
        self._paths: list[Path] | None = None
        self._connections: dict[str, sqlite3.Connection] = {}
        self._committed: dict[str, int] = {}
        self._pulled: dict[str, int] = {}  # above _committed once rows are pulled, until the fold
        self.pulled_entries = 0
        self.unfolded_bytes: dict[str, int] = {}  # per shard: bytes pulled since the last fold

    def load(self, db: sqlite3.Connection) -> None:
        """Start from the watermarks the last committed fold recorded (start-up: the replay)."""
        self._committed = committed_watermarks(db)
        self._pulled = dict(self._committed)

    def pull(self, deltas: Deltas) -> int:
        """Add every shard row above the pulled mark to `deltas`; returns how many.
        A shard that cannot be read now (being created, locked) is skipped until the next pull."""
        return self._pull(deltas, None)[0]

    def pull_slice(self, deltas: Deltas, max_bytes: int) -> bool:
        """Pull about `max_bytes` of rows per shard at most; True if some were left for another
        slice. Merging a 200-toggle row costs ~0.1 ms, so the puller takes a tenth of a second's
        rows in slices and lets the requests waiting on this loop run in between."""
        return self._pull(deltas, max_bytes)[1]

    def _pull(self, deltas: Deltas, max_bytes: int | None) -> tuple[int, bool]:
        added, more = 0, False
        if self.watch or self._paths is None:
            self._paths = sorted(self.data_dir.glob(SHARD_GLOB))
        for path in self._paths:
            name = shard_name(path)
            try:
                rows, left = self._pull_one(name, path, deltas, max_bytes)
            except sqlite3.Error as exc:
                log.debug("shard %s not readable now (%s); will pull it later", name, exc)
                self._forget(name)
                continue
            added += rows
            more = more or left
        self.pulled_entries += added
        return added, more

    def _pull_one(self, name: str, path: Path, deltas: Deltas, max_bytes: int | None) -> tuple[int, bool]:
        """(rows added, whether rows were left because `max_bytes` was reached)."""
        db = self._connections.get(name)
        if db is None:
            db = self._connections[name] = open_read_only(path)
        last = self._pulled.get(name, 0)
        limit = PULL_CHUNK if max_bytes is None else SLICE_ROWS
        added = pulled_bytes = 0
        while True:
            rows = db.execute("SELECT id, entry FROM journal WHERE id > ? ORDER BY id LIMIT ?",
                              (last, limit)).fetchall()
            for row_id, blob in rows:
                deltas.add(decode_entry(blob))
                last = row_id
            added += len(rows)
            # Record progress per chunk: the rows are in `deltas` now, whatever happens next.
            if rows:
                size = sum(len(blob) for _, blob in rows)
                pulled_bytes += size
                self._pulled[name] = last
                self.unfolded_bytes[name] = self.unfolded_bytes.get(name, 0) + size
            if len(rows) < limit:
                return added, False
            if max_bytes is not None and pulled_bytes >= max_bytes:
                return added, True

    @property
    def has_unrecorded(self) -> bool:
        return self._pulled != self._committed

    def record(self, db: sqlite3.Connection) -> None:
        """Inside the fold's transaction: the marks of everything pulled so far."""
        changed = [(name, last) for name, last in self._pulled.items() if self._committed.get(name) != last]
        if changed:
            db.executemany(
                "INSERT INTO shard_watermarks (shard, last_id) VALUES (?, ?) "
                "ON CONFLICT (shard) DO UPDATE SET last_id = excluded.last_id", changed,
            )

    def committed(self) -> None:
        """After the fold's commit."""
        self._committed = dict(self._pulled)
        self.unfolded_bytes.clear()

    def _forget(self, name: str) -> None:
        db = self._connections.pop(name, None)
        if db is not None:
            db.close()

    def close(self) -> None:
        for name in list(self._connections):
            self._forget(name)


# --- the worker's side ---------------------------------------------------------------------


def read_watermark(primary: sqlite3.Connection, name: str) -> int:
    row = primary.execute("SELECT last_id FROM shard_watermarks WHERE shard = ?", (name,)).fetchone()
    return row[0] if row else 0


def next_shard_id(shard: sqlite3.Connection, watermark: int) -> int:
    """Above every id the shard ever held: rows at or below the watermark may have been deleted,
    and reusing such an id would hide a new row below the primary's mark."""
    top = shard.execute("SELECT max(id) FROM journal").fetchone()[0] or 0
    return max(top, watermark) + 1


def backlog_bytes(shard: sqlite3.Connection, watermark: int) -> int:
    """Bytes of the rows the primary has not folded yet."""
    return shard.execute("SELECT coalesce(sum(length(entry)), 0) FROM journal WHERE id > ?", (watermark,)).fetchone()[0]
