"""Reliability requirement 14 (tests/reliability/README.md): a torn -wal, a missing -shm and a corrupt database at start-up.

The crash states are real files: a copy of the database and its -wal taken while the store is
open and idle is exactly what a kill -9 leaves behind (nothing is mid-commit in a single-writer
store between awaits). Torn WAL tails and missing -shm files are SQLite's to recover; real
corruption is quarantined and the proxy starts on a fresh database.
"""

from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

from proxy.storage import CountRow, JournalEntry, Store
from proxy.storage.integrity import marker_path
from tests.support import ProxyProcess, this_hour

HOUR = this_hour()
WAL_HEADER = 32
FRAME_HEADER = 24


def entry(flag: str, yes: int) -> JournalEntry:
    return JournalEntry("development", HOUR + 10, [CountRow("app", flag, HOUR, yes, 0)])


async def crash_snapshot(tmp_path: Path) -> Path:
    """A database as kill -9 leaves it: 'kept' folded into the tables, 'last' only in the journal,
    committed in the -wal by the final transaction. Returns the copied database path."""
    live = tmp_path / "live" / "metrics-proxy.db"
    store = Store(live)
    await store.open()
    for n in range(20):
        await store.append([entry(f"kept-{n}", n + 1)])
    store.fold()
    await store.append([entry("last", 7)])
    copy = tmp_path / "crashed" / "metrics-proxy.db"
    copy.parent.mkdir()
    shutil.copy(live, copy)
    shutil.copy(live.with_name(live.name + "-wal"), copy.with_name(copy.name + "-wal"))
    await store.close()
    return copy


async def reopen(path: Path) -> tuple[Store, dict[str, int]]:
    store = Store(path)
    await store.open()
    return store, {flag: yes for _, _, flag, yes, _ in await store.totals()}


KEPT = {f"kept-{n}": n + 1 for n in range(20)}


async def test_missing_shm_is_not_corruption(tmp_path):
    path = await crash_snapshot(tmp_path)
    assert not path.with_name(path.name + "-shm").exists()
    store, totals = await reopen(path)
    try:
        assert totals == {**KEPT, "last": 7}
        assert store.quarantined == []
        assert not (path.parent / "quarantine").exists()
    finally:
        await store.close()


async def test_wal_truncated_mid_frame_loses_only_the_torn_commit(tmp_path):
    path = await crash_snapshot(tmp_path)
    wal = path.with_name(path.name + "-wal")
    page_size = int.from_bytes(path.read_bytes()[16:18], "big")
    frame = FRAME_HEADER + page_size
    size = wal.stat().st_size
    assert size >= WAL_HEADER + 2 * frame, "the crash state must have committed frames to tear"
    with open(wal, "r+b") as f:
        f.truncate(size - frame // 2)  # half of the last frame (the final commit's) is gone

    store, totals = await reopen(path)
    try:
        # SQLite drops the transaction whose commit frame is torn, and nothing before it.
        assert totals == KEPT
        assert store.quarantined == []
        await store.append([entry("after", 1)])  # and the database takes writes again
        assert {flag: yes for _, _, flag, yes, _ in await store.totals()}["after"] == 1
    finally:
        await store.close()


async def corrupt_a_table_page(path: Path, table: str = "hourly_counts") -> None:
    """Overwrite the b-tree page header of `table`'s root page: a structural fault quick_check sees."""
    store, _ = await reopen(path)
    root = store.db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    page_size = store.pragma("page_size")
    await store.close()  # checkpoints the -wal into the file: the page is in the main file now
    with open(path, "r+b") as f:
        f.seek((root - 1) * page_size)
        header = bytearray(f.read(12))
        f.seek((root - 1) * page_size)
        f.write(bytes(b ^ 0xA5 for b in header))


async def test_flipped_page_after_an_unclean_stop_is_quarantined(tmp_path):
    path = await crash_snapshot(tmp_path)
    await corrupt_a_table_page(path)
    marker_path(path).unlink()  # the previous run was killed: no clean-shutdown marker

    store, totals = await reopen(path)
    try:
        assert len(store.quarantined) == 1
        moved = store.quarantined[0]
        assert moved.parent == path.parent / "quarantine"
        assert (moved / "metrics-proxy.db").exists()
        assert (moved / "REASON").read_text().strip()  # what quick_check found, for the human
        assert totals == {}  # a fresh database
        await store.append([entry("fresh", 2)])
        assert {flag: yes for _, _, flag, yes, _ in await store.totals()} == {"fresh": 2}
    finally:
        await store.close()
    store, totals = await reopen(path)  # the next start is normal: no second quarantine
    try:
        assert store.quarantined == [] and totals == {"fresh": 2}
    finally:
        await store.close()


async def test_clean_stop_skips_the_page_scan(tmp_path):
    """The choice documented in integrity.py: after a clean stop quick_check does not run, so a
    fault in a page nothing reads at start-up is not looked for (it surfaces when read)."""
    path = await crash_snapshot(tmp_path)
    await corrupt_a_table_page(path)
    assert marker_path(path).exists()
    store = Store(path)
    await store.open()
    try:
        assert store.quarantined == []
    finally:
        await store.close()


async def test_flipped_header_is_quarantined_even_after_a_clean_stop(tmp_path):
    path = await crash_snapshot(tmp_path)
    store, _ = await reopen(path)
    await store.close()
    assert marker_path(path).exists()
    with open(path, "r+b") as f:
        f.write(b"\xff" * 16)  # "SQLite format 3\0" is gone: SQLITE_NOTADB on first read

    store, totals = await reopen(path)
    try:
        assert len(store.quarantined) == 1
        assert "not a database" in (store.quarantined[0] / "REASON").read_text()
        assert totals == {}
    finally:
        await store.close()


def fetch(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def test_real_proxy_starts_on_a_corrupt_database_and_says_so(tmp_path):
    data = tmp_path / "data"
    proxy = ProxyProcess(data)
    try:
        proxy.start()
        assert proxy.terminate() == 0  # a clean stop checkpoints the -wal into the file
        db = data / "metrics-proxy.db"
        with open(db, "r+b") as f:
            f.write(b"\xff" * 16)  # the "SQLite format 3" magic
        proxy.start()  # no crash loop: it answers health at once
        status, body = fetch(proxy.url + "/internal-backstage/ready")
        assert status == 200, body
        _, metrics = fetch(proxy.url + "/internal-backstage/prometheus")
        assert "metrics_proxy_store_quarantined_total 1.0" in metrics
        assert "is corrupt" in proxy.log() and "quarantine" in proxy.log()
        assert len(list((data / "quarantine").iterdir())) == 1
    finally:
        proxy.stop()
