"""The per-minute totals behind the sliding windows agree with minute_counts, also after an
upgrade from a database written before they existed."""

from __future__ import annotations

import sqlite3

from proxy.storage import CountRow, JournalEntry, Store
from proxy.storage.database import open_writer
from proxy.storage.migrations import LATEST, migrate

ROLLUP_CHECK = {
    "minute_flag_totals": "SELECT feature_name, minute, sum(yes), sum(no) FROM minute_counts GROUP BY 1, 2",
    "minute_app_totals": "SELECT app_name, minute, sum(yes), sum(no) FROM minute_counts GROUP BY 1, 2",
}


def rollups_agree(path) -> int:
    with sqlite3.connect(path) as db:
        for table, expected in ROLLUP_CHECK.items():
            assert sorted(db.execute(f"SELECT * FROM {table}").fetchall()) == sorted(db.execute(expected).fetchall())
        return db.execute("SELECT count(*) FROM minute_flag_totals").fetchone()[0]


def entries(now: float) -> list[JournalEntry]:
    return [
        JournalEntry(env, now + offset, [CountRow(app, flag, int(now // 3600 * 3600), yes, 1)])
        for env, app, flag, offset, yes in [
            ("development", "a", "f1", 0, 2), ("production", "a", "f1", 5, 3), ("development", "b", "f1", 61, 4),
            ("development", "b", "f2", 61, 1),
        ]
    ]


async def test_fold_keeps_rollups_equal_to_minute_counts(tmp_path, clock):
    store = Store(tmp_path / "m.db")
    await store.open()
    try:
        await store.append(entries(clock.now()))
        store.fold()
        await store.append(entries(clock.now()))  # a second fold adds to the same rows
        store.fold()
    finally:
        await store.close()
    assert rollups_agree(tmp_path / "m.db") == 3  # f1 in two minutes, f2 in one


async def test_upgrade_fills_rollups_from_existing_minute_counts(tmp_path, clock):
    path = tmp_path / "old.db"
    db = open_writer(path, "FULL")
    migrate(db, target=2)  # a database from before the rollups
    db.executemany(
        "INSERT INTO minute_counts VALUES (?, ?, ?, ?, ?, ?)",
        [("development", "a", "f1", 60, 2, 1), ("production", "b", "f1", 60, 3, 0), ("development", "a", "f2", 120, 1, 1)],
    )
    db.close()
    store = Store(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == LATEST
    assert rollups_agree(path) == 2
