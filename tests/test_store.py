"""The store: declared durability, journal replay after a crash, schema upgrades."""

from __future__ import annotations

import pytest

from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from proxy.storage.database import open_writer, wal_reset_bug_possible
from proxy.storage.journal import encode_entry
from proxy.storage.migrations import LATEST, MigrationError, migrate, schema_version
from tests.support import this_hour

HOUR = this_hour()  # the hour the entries are filed under: recent, never a date that ages


def entry(yes: int, no: int = 0, flag: str = "f") -> JournalEntry:
    return JournalEntry("development", HOUR + 10, [CountRow("app", flag, HOUR, yes, no, {"red": yes})],
                        [InstanceSeen("app", "i-1")])


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL", "OFF"])
async def test_every_connection_declares_its_durability(tmp_path, synchronous):
    store = Store(tmp_path / "db.sqlite", synchronous)
    await store.open()
    try:
        assert store.pragma("journal_mode") == "wal"
        assert store.pragma("synchronous") == {"OFF": 0, "NORMAL": 1, "FULL": 2}[synchronous]
        assert store.pragma("busy_timeout") >= 5000
        cursor = await store.reader.execute("PRAGMA busy_timeout")
        assert (await cursor.fetchone())[0] >= 5000
        cursor = await store.reader.execute("PRAGMA journal_mode")
        assert (await cursor.fetchone())[0] == "wal"
    finally:
        await store.close()


async def test_unfolded_journal_is_replayed_exactly_once(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    await store.open()
    await store.append([entry(3, 1)])
    await store.append([entry(4, 2)])
    # Simulate a crash: the journal is committed, the fold never ran, the process is gone.
    store.writer._task.cancel()
    store._db.close()
    store._db = None
    store.writer = None
    await store._reader.close()
    store._reader = None

    for _ in range(2):  # replay, then a second clean start must not replay again
        store = Store(path)
        await store.open()
        assert await store.totals() == [("development", "app", "f", 7, 3)]
        cursor = await store.reader.execute("SELECT variants FROM hourly_counts")
        assert (await cursor.fetchone())[0] == '{"red":7}'
        cursor = await store.reader.execute("SELECT count(*) FROM journal")
        assert (await cursor.fetchone())[0] == 0
        await store.close()


async def test_an_older_database_opens_and_upgrades(tmp_path):
    path = tmp_path / "old.sqlite"
    db = open_writer(path, "FULL")
    migrate(db, target=1)
    assert schema_version(db) == 1
    db.execute("INSERT INTO hourly_counts VALUES ('development', 'app', 'old-flag', ?, 5, 6, NULL)", (HOUR,))
    db.execute("INSERT INTO journal (id, entry) VALUES (1, ?)", (encode_entry(entry(1)),))
    db.close()

    store = Store(path)
    await store.open()
    try:
        assert store.pragma("user_version") == LATEST
        assert await store.totals() == [
            ("development", "app", "f", 1, 0),
            ("development", "app", "old-flag", 5, 6),
        ]
    finally:
        await store.close()


def test_a_newer_database_is_refused(tmp_path):
    db = open_writer(tmp_path / "new.sqlite", "FULL")
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(MigrationError, match="newer"):
        migrate(db)


def test_wal_reset_bug_versions():
    assert wal_reset_bug_possible((3, 40, 1))
    assert wal_reset_bug_possible((3, 51, 2))
    assert not wal_reset_bug_possible((3, 51, 3))
    assert not wal_reset_bug_possible((3, 50, 7))
    assert wal_reset_bug_possible((3, 50, 6))
    assert not wal_reset_bug_possible((3, 44, 6))
