"""A reserve on data_dir's filesystem: space held in a file, given back when the filesystem is full.

`max_db_size` bounds what the store may take (limits.py), but the filesystem can fill first: other
files, a volume smaller than the limit, a -wal grown while a reader pinned an old snapshot. Then
SQLite answers every write with SQLITE_FULL, and not only ingest: a fold, cutting pending counts
into batches, recording a delivery and a checkpoint all need room too (a DELETE writes its pages
to the -wal before they are free). Nothing would be forwarded, so nothing freed, until someone
freed space by hand.

So the store keeps RESERVE_FILE beside the database: `disk_reserve` bytes of allocated blocks
(posix_fallocate, or zeros written where the filesystem cannot allocate, then fsync).

- Released: a statement of the writer connection fails with SQLITE_FULL, or an I/O error, while
  the filesystem has less free than the reserve (at least MIN_FULL_BYTES). That is the filesystem
  being full, not the store: a store at `max_db_size` fails the same way with the filesystem's free
  space untouched. The file is truncated to nothing by WriterConnection, the one place every write
  of the writer connection passes, whichever write found the disk full; the transaction that
  failed is run once more where it can be (`retry`), and the work that frees space (folds, cutting
  batches, delivering and deleting them, checkpoints) goes on in the space it gave back.
- While released, the reserve is a floor on free space instead of a file: ingest is refused, and
  /internal-backstage/ready says not ready, while the filesystem has less free than
  `disk_reserve`. New counts never take what that work needs; the floor does not hold off other
  writers to the filesystem, which is what the file is for.
- Restored: once the filesystem has RESTORE_FACTOR times the reserve free (room for the file and as
  much again: with less, the next commits would release it at once), the file is allocated again,
  at start and then at every fold interval.

"Free" is what statvfs says an unprivileged process may use (`df`'s Avail). On a filesystem that
compresses or deduplicates (ZFS, btrfs with compression) a file of zeros may take no blocks: the
start-up log says so when the file holds fewer blocks than its size.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

RESERVE_FILE = "disk-reserve"
RESTORE_FACTOR = 2
MIN_FULL_BYTES = 1024 * 1024
ZEROS_CHUNK = 1024 * 1024
# posix_fallocate's answers on a filesystem that cannot allocate: then zeros are written instead.
CANNOT_ALLOCATE = {errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}
NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def is_space_error(exc: BaseException) -> bool:
    """SQLITE_FULL (the page limit, or ENOSPC on a write), or an I/O error (growing the -shm file,
    an fsync): what a full filesystem makes SQLite answer."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(exc, sqlite3.Error) or code is None:
        return False
    return code == sqlite3.SQLITE_FULL or code & 0xFF == sqlite3.SQLITE_IOERR


class DiskReserve:
    """The reserve file of one data folder. `size` None: this process does not manage it (a
    command that opens the store beside a running proxy); 0: no reserve (a file an earlier
    configuration left is removed)."""

    def __init__(self, data_dir: Path, size: int | None) -> None:
        self.path = data_dir / RESERVE_FILE
        self.managed = size is not None
        self.size = size or 0
        self.held = False
        self.releases = 0  # times the file was given back on a full filesystem
        self.restores = 0  # times it was allocated again after a release
        self._restoring = False
        self._failure_logged = False  # an allocation that failed other than for room: logged once

    @property
    def enabled(self) -> bool:
        return self.size > 0

    def held_bytes(self) -> int:
        return self.size if self.held else 0

    def free_bytes(self) -> int:
        """Bytes free on the data folder's filesystem for an unprivileged process; 0 when it
        cannot be asked (the folder is gone)."""
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    # --- start ----------------------------------------------------------------------------------

    def open(self) -> None:
        """At start: keep the file an earlier run left in place, else allocate it when there is
        room, else start released (ingest refused while less than the reserve is free)."""
        if not self.managed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.enabled:
            self._remove()
            return
        if not self._in_place() and not self._allocate_if_room():
            log.warning(
                "the filesystem of %s has %d bytes free, less than twice disk_reserve (%d bytes): the "
                "reserve file is not allocated; ingest is refused while less than disk_reserve is free, "
                "and the file is allocated once there is room",
                self.path.parent, self.free_bytes(), self.size,
            )
            return
        self.held = True
        self._check_blocks()
        log.info("disk reserve: %s holds %d bytes for a full filesystem", self.path, self.size)

    def _in_place(self) -> bool:
        try:
            return os.stat(self.path).st_size == self.size
        except FileNotFoundError:
            return False

    def _check_blocks(self) -> None:
        allocated = os.stat(self.path).st_blocks * 512
        if allocated < self.size:
            log.warning(
                "the disk reserve %s takes %d bytes on disk for its %d (a filesystem that compresses or "
                "does not allocate): it holds back less than disk_reserve", self.path, allocated, self.size,
            )

    def _remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        log.info("disk_reserve is 0: removed the reserve file %s", self.path)

    # --- releasing --------------------------------------------------------------------------

    def filesystem_full(self) -> bool:
        """Less free than the reserve (at least MIN_FULL_BYTES): a write that failed for space
        failed for the filesystem's, not for max_db_size's page limit."""
        return self.free_bytes() < max(self.size, MIN_FULL_BYTES)

    def on_write_error(self, exc: BaseException) -> None:
        """Every error of a writer statement comes here first (WriterConnection)."""
        if self.held and is_space_error(exc) and self.filesystem_full():
            self.release()

    def release(self) -> None:
        try:
            os.truncate(self.path, 0)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("could not release the disk reserve %s: %s", self.path, exc)
            return
        self.held = False
        self.releases += 1
        log.warning(
            "the filesystem of %s is full: released the disk reserve (%d bytes) so that folds and "
            "forwarding can free space; ingest is refused while less than that is free (%d bytes now)",
            self.path.parent, self.size, self.free_bytes(),
        )

    def retry(self, attempt: Callable[[], T]) -> T:
        """`attempt()`, and once more if it failed because the filesystem was full and that
        released the reserve. Only for an attempt that leaves nothing behind when it fails (one
        write transaction, rolled back)."""
        releases = self.releases
        try:
            return attempt()
        except sqlite3.Error:
            if self.releases == releases:
                raise
        return attempt()

    # --- while released ---------------------------------------------------------------------

    def refusal(self) -> str | None:
        """Why ingest is refused for want of free space, or None. Free space is only asked while
        the reserve is released."""
        if not self.enabled or self.held:
            return None
        free = self.free_bytes()
        if free >= self.size:
            return None
        return (
            f"the filesystem of the data folder is full ({free} bytes free, less than disk_reserve: "
            f"{self.size}); its reserve is left to folds and forwarding, and ingest is refused until "
            "that much is free"
        )

    async def maintain(self) -> None:
        """Allocate the file again once there is room (at every fold interval). A file someone
        removed or cut short counts as released."""
        if not self.enabled or self._restoring:
            return
        if self.held:
            if self._in_place():
                return
            self.held = False
            log.warning("the disk reserve %s was removed or cut short: allocated again once there is room",
                        self.path)
        self._restoring = True
        try:
            # Off the event loop: where zeros must be written, 64 MiB and an fsync take a while.
            restored = await asyncio.to_thread(self._allocate_if_room)
        finally:
            self._restoring = False
        if restored:
            self.held = True
            self.restores += 1
            log.warning("the disk reserve %s holds its %d bytes again (%d bytes free): ingest resumes",
                        self.path, self.size, self.free_bytes())

    def _allocate_if_room(self) -> bool:
        try:
            allocated = os.stat(self.path).st_blocks * 512
        except FileNotFoundError:
            allocated = 0
        if self.free_bytes() + allocated < RESTORE_FACTOR * self.size:
            return False
        try:
            allocated = self._allocate()
        except OSError as exc:
            if not self._failure_logged:
                self._failure_logged = True
                log.error("could not allocate the disk reserve %s (tried again at every fold): %s", self.path, exc)
            return False
        self._failure_logged = False
        return allocated

    def _allocate(self) -> bool:
        """The file at `size` bytes of allocated blocks, synced; False (and an empty file) when
        the filesystem has no room for it."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            try:
                if os.fstat(fd).st_size > self.size:
                    os.ftruncate(fd, self.size)
                _fill(fd, self.size)
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, 0)  # whatever was allocated goes back
                if exc.errno in NO_ROOM:
                    return False
                raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.path.parent)
        return True


def _fill(fd: int, size: int) -> None:
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(fd, 0, size)
            return
        except OSError as exc:
            if exc.errno not in CANNOT_ALLOCATE:
                raise
    zeros = bytes(ZEROS_CHUNK)
    offset = 0
    while offset < size:
        offset += os.pwrite(fd, zeros[: min(ZEROS_CHUNK, size - offset)], offset)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class WriterConnection(sqlite3.Connection):
    """The class of the store's writer connection: the error of any statement goes to the disk
    reserve before it propagates, so a full filesystem releases the reserve whichever write found
    it (ingest, a fold, a cut, a delivery, pruning, a checkpoint)."""

    disk_reserve: DiskReserve | None = None

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            self._failed(exc)
            raise

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> sqlite3.Cursor:
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as exc:
            self._failed(exc)
            raise

    def _failed(self, exc: sqlite3.Error) -> None:
        if self.disk_reserve is not None:
            self.disk_reserve.on_write_error(exc)
