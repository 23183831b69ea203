"""Start-up integrity: a corrupt database is moved aside, never crash-looped on.

A torn `-wal` tail or a missing `-shm` is not corruption: SQLite ignores WAL frames whose
checksums do not match and rebuilds the shared-memory index, so those start normally.
Real corruption (a page that no longer parses, a header that is not SQLite's) would make every
start fail the same way; instead the database and its `-wal`/`-shm` are moved to
`<data_dir>/quarantine/<UTC timestamp>/` for a human to inspect, and the proxy starts on a
fresh database, logs it at ERROR and counts it in `metrics_proxy_store_quarantined_total`.

`PRAGMA quick_check` reads every page, which takes seconds per GiB, so it runs only when the
previous run did not stop cleanly (no clean-shutdown marker next to the database): a clean
close leaves a consistent file, and corruption met later still surfaces as SQLITE_CORRUPT on
open, which is quarantined the same way.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from pathlib import Path

log = logging.getLogger(__name__)

# Result codes that mean "the bytes on disk are wrong", as opposed to full, busy or read-only.
CORRUPTION_CODES = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
COMPANIONS = ("", "-wal", "-shm", "-journal")


def marker_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".clean-shutdown")


def mark_clean_shutdown(db_path: Path) -> None:
    """Written after the last connection closed: the next start may skip the page scan."""
    marker_path(db_path).write_text(f"{time.time():.3f}\n")


def clear_clean_shutdown(db_path: Path) -> bool:
    """Remove the marker (a crash from now on must trigger the check); True when it was there."""
    try:
        marker_path(db_path).unlink()
        return True
    except FileNotFoundError:
        return False


def is_corruption(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and getattr(exc, "sqlite_errorcode", None) in CORRUPTION_CODES


def quick_check(db_path: Path) -> str | None:
    """None when `PRAGMA quick_check` finds the file sound, else what is wrong (first lines)."""
    try:
        db = sqlite3.connect(db_path, isolation_level=None)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    try:
        rows = db.execute("PRAGMA quick_check(5)").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        db.close()
    problems = [r[0] for r in rows if r[0] != "ok"]
    return "; ".join(problems) if problems else None


def quarantine(db_path: Path, reason: str, now: float | None = None) -> Path:
    """Move the database and its companion files aside; returns the quarantine folder."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    target = db_path.parent / "quarantine" / stamp
    n = 1
    while target.exists():  # two quarantines in one second keep both
        n += 1
        target = db_path.parent / "quarantine" / f"{stamp}-{n}"
    target.mkdir(parents=True)
    moved = []
    for suffix in COMPANIONS:
        source = db_path.with_name(db_path.name + suffix)
        if source.exists():
            shutil.move(source, target / source.name)
            moved.append(source.name)
    (target / "REASON").write_text(reason + "\n")
    log.error(
        "database %s is corrupt (%s): moved %s to %s and starting on a fresh database; the "
        "counts in it were not forwarded", db_path, reason, ", ".join(moved), target,
    )
    return target


def check_before_open(db_path: Path) -> str | None:
    """Consume the clean-shutdown marker; after an unclean stop, quick_check the file.

    Returns why the file is corrupt, or None when it may be opened."""
    clean = clear_clean_shutdown(db_path)
    if clean or not db_path.exists():
        return None
    started = time.perf_counter()
    problem = quick_check(db_path)
    log.info("previous run did not stop cleanly: quick_check of %s took %.0f ms (%s)",
             db_path, (time.perf_counter() - started) * 1000, problem or "ok")
    return problem
