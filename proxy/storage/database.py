"""Opening SQLite: the one writer connection and read-only connections, with declared durability."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from proxy.storage.usage.aggregate import variants_add

log = logging.getLogger(__name__)
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
# Each connection's page cache, in KiB: SQLite's own default (-2000), set rather than inherited
# because a build may compile in another one, and this is part of the proxy's memory budget
# (docs/performance.md, memory by cardinality). Sorts and DISTINCTs beyond it spill to temp files.
PAGE_CACHE_KIB = 2000
# SQLite before 3.51.3 (backports 3.44.6, 3.50.7) can corrupt a WAL database when two connections
# write or checkpoint it at once. This proxy writes through exactly one connection.
WAL_RESET_FIXED = [(3, 44, 6), (3, 50, 7), (3, 51, 3)]


def wal_reset_bug_possible(version: tuple[int, ...] = sqlite3.sqlite_version_info) -> bool:
    for fixed in WAL_RESET_FIXED:
        if version[:2] == fixed[:2]:
            return version < fixed
    return version < WAL_RESET_FIXED[-1]


def log_sqlite_version() -> None:
    if wal_reset_bug_possible():
        log.warning(
            "SQLite %s has the WAL-reset bug (fixed in 3.51.3); safe here because the proxy "
            "writes through a single connection",
            sqlite3.sqlite_version,
        )
    else:
        log.info("SQLite %s", sqlite3.sqlite_version)


def memory_pragmas() -> list[str]:
    """What bounds a connection's own memory: its page cache, and no memory-mapped file pages
    (mmap_size 0, SQLite's default; mapped pages would count in the process's RSS)."""
    return [f"PRAGMA cache_size = -{PAGE_CACHE_KIB}", "PRAGMA mmap_size = 0"]


def open_writer(path: Path, synchronous: str, factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
    """`factory`: the connection's class (the store's is capacity.disk_reserve.WriterConnection)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000,
                         factory=factory)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise sqlite3.OperationalError(f"could not switch {path} to WAL mode (got {mode})")
    db.execute(f"PRAGMA synchronous = {synchronous}")
    # Debian builds turn secure_delete on; it made clearing the journal ~10x slower.
    db.execute("PRAGMA secure_delete = OFF")
    # Keep the -wal file a stable size after checkpoints instead of growing to its high-water mark.
    db.execute("PRAGMA journal_size_limit = 67108864")
    for pragma in memory_pragmas():
        db.execute(pragma)
    db.create_function("variants_add", 2, variants_add, deterministic=True)
    return db


async def open_reader(path: Path) -> aiosqlite.Connection:
    db = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA query_only = ON")
    for pragma in memory_pragmas():
        await db.execute(pragma)
    db.row_factory = sqlite3.Row
    return db


def durability(db: sqlite3.Connection) -> dict[str, object]:
    """What a connection actually runs with, for checks and for the start-up log."""
    sync_names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return {
        "journal_mode": db.execute("PRAGMA journal_mode").fetchone()[0],
        "synchronous": sync_names[db.execute("PRAGMA synchronous").fetchone()[0]],
        "busy_timeout": db.execute("PRAGMA busy_timeout").fetchone()[0],
    }


class StatusReader(Protocol):
    """Runs a read query on a read-only connection: the `Store` (after a fold), or `ReadOnlyFile`."""

    async def read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T: ...


class ReadOnlyFile:
    """The database file at `path` opened read-only, safe beside a running proxy (`metrics-proxy
    status` when no proxy answers); counts still in the journal, not folded yet, are not seen."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def __aenter__(self) -> ReadOnlyFile:
        self._db = await open_reader(self.path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._db is not None:
            await self._db.close()

    async def read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        assert self._db is not None, "not opened"
        return await query(self._db, *args)
