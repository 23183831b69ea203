"""Staged folds (proxy/storage/usage/staging.py): a large fold written a chunk per transaction leaves the
tables exactly as one transaction would, a read in between sees every count, and a crash between
chunks neither loses nor doubles a count."""

from __future__ import annotations

import asyncio
import sqlite3

from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from proxy.storage.journal import PostedBucket
from proxy.storage.store import STAGED_CHUNK_KEYS, STAGED_FOLD_KEYS
from proxy.storage.usage.aggregate import Deltas
from proxy.unleash.schemas.client import ToggleCount
from tests.support import this_hour
from tests.test_shards import abandon_reader, crash

HOUR = this_hour()
APPS = 3
FLAGS = 1_000  # APPS * FLAGS keys: a staged fold
TABLES = ("hourly_counts", "pending_counts", "minute_counts", "flag_seen", "usage_totals",
          "minute_flag_totals", "minute_app_totals", "instances")


def posts(round_: int) -> list[JournalEntry]:
    """One metrics post per app (variants on every seventh flag) and a bulk-style entry."""
    entries = []
    for app in range(APPS):
        toggles = {f"flag-{f}": ToggleCount(yes=round_ + f % 5, no=f % 3,
                                            variants={"red": 1, f"v{round_}": 2} if f % 7 == 0 else None)
                   for f in range(FLAGS)}
        entries.append(JournalEntry("development", HOUR + 60 * round_ + app, [],
                                    [InstanceSeen(f"app-{app}", f"i-{app}")],
                                    bucket=PostedBucket(f"app-{app}", HOUR, toggles)))
    entries.append(JournalEntry("production", HOUR + 60 * round_ + 30,
                                [CountRow("chained", f"flag-{f}", HOUR, 1, 1) for f in range(50)]))
    return entries


async def fill(path) -> Store:
    store = Store(path)
    await store.open()
    for round_ in range(3):
        for entry in posts(round_):
            await store.append([entry])
    assert store.writer.deltas.count_keys() >= STAGED_FOLD_KEYS
    return store


def tables(path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        return {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall()) for table in TABLES}  # noqa: S608


def staged_chunks(path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT count(*) FROM fold_staging").fetchone()[0]


async def yes_total(store: Store) -> int:
    return sum(row[3] for row in await store.totals())


def yes_of(entries: list[JournalEntry]) -> int:
    return sum(sum(t.yes for t in e.bucket.toggles.values()) if e.bucket else sum(r.yes for r in e.counts)
               for e in entries)


EXPECTED_YES = sum(yes_of(posts(round_)) for round_ in range(3))


async def test_a_staged_fold_writes_the_same_tables_as_one_transaction(tmp_path):
    whole = await fill(tmp_path / "whole.db")
    assert whole.fold()
    await whole.close()
    staged = await fill(tmp_path / "staged.db")
    folds = staged.folds
    assert await staged.fold_in_chunks()
    assert staged.folds == folds + 1
    assert staged_chunks(tmp_path / "staged.db") == 0
    await staged.close()
    assert tables(tmp_path / "staged.db") == tables(tmp_path / "whole.db")
    assert all(tables(tmp_path / "whole.db").values())


async def test_requests_are_answered_between_chunks_and_a_read_sees_every_count(tmp_path):
    store = await fill(tmp_path / "db.sqlite")
    chunks = -(-store.writer.deltas.count_keys() // STAGED_CHUNK_KEYS)  # keys by chunk, whatever the groups
    folding = asyncio.create_task(store.fold_in_chunks())
    await asyncio.sleep(0)  # the task staged the fold and wrote its first chunk, then yielded
    left = staged_chunks(tmp_path / "db.sqlite")
    assert left == chunks - 1
    assert await store.append(posts(9)[:1]) is True  # the loop answers ingest between chunks
    assert await yes_total(store) == EXPECTED_YES + yes_of(posts(9)[:1])
    assert staged_chunks(tmp_path / "db.sqlite") == 0  # the read's fold wrote what was staged first
    assert await folding
    assert await yes_total(store) == EXPECTED_YES + yes_of(posts(9)[:1])
    await store.close()


async def test_a_crash_between_chunks_loses_and_doubles_nothing(tmp_path):
    path = tmp_path / "db.sqlite"
    store = await fill(path)
    folding = asyncio.create_task(store.fold_in_chunks())
    await asyncio.sleep(0)
    assert staged_chunks(path) > 0
    folding.cancel()
    crash(store)  # no further chunk, no fold at close: the staged rest must be written at start
    await abandon_reader(store)

    store = Store(path)
    await store.open()
    assert staged_chunks(path) == 0
    assert await yes_total(store) == EXPECTED_YES
    await store.close()
    whole = await fill(tmp_path / "whole.db")
    await whole.close()
    assert tables(path) == tables(tmp_path / "whole.db")


async def test_two_chunked_folds_at_once_take_turns_and_write_one_chunk_at_a_time(tmp_path):
    """The folder and the shard puller both fold. The second must wait for the first rather than
    find its chunks staged and write them all in one go (the stall staging is there to avoid)."""
    path = tmp_path / "turns.db"
    store = await fill(path)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:  # runs between the folds' transactions, as a request would
        while not done.is_set():
            seen.append(staged_chunks(path))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    first = asyncio.create_task(store.fold_in_chunks())
    await asyncio.sleep(0)
    second = asyncio.create_task(store.fold_in_chunks())
    assert await first and await second
    done.set()
    await watcher
    staged = [n for n in seen if n]
    assert max(staged) >= 3  # the first fold's chunks were staged ...
    assert all(b >= a - 1 for a, b in zip(seen, seen[1:]))  # ... and went one per turn, never at once
    assert await yes_total(store) == EXPECTED_YES
    await store.close()



def test_one_group_larger_than_a_chunk_is_cut_by_keys():
    """All the flags one app posts in one minute are one group; a group of 1,000 new flags used to
    be one chunk (one transaction), however large the group."""
    deltas = Deltas()
    toggles = {f"flag-{n:04d}": ToggleCount(yes=n % 5 + 1, no=1) for n in range(1000)}
    deltas.add(JournalEntry("development", HOUR + 30, bucket=PostedBucket("app", HOUR, toggles)))
    deltas.add(JournalEntry("development", HOUR + 90, [CountRow("edge", "flag-x", HOUR, 2, 0)]))
    chunks = deltas.count_chunks(STAGED_CHUNK_KEYS)
    parts = [Deltas.from_chunk(chunk) for chunk in chunks]
    assert [part.count_keys() for part in parts] == [250, 250, 250, 250, 1]
    merged: dict = {}
    for part in parts:
        for key, group in part.counts.items():
            merged.setdefault(key, {}).update({flag: list(agg) for flag, agg in group.items()})
    assert merged == deltas.counts
