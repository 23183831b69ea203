"""Journal shards of ingest workers, folded by the primary with a per-shard watermark: every shard
row is counted exactly once across clean restarts and crashes, and ids are never reused."""

from __future__ import annotations

import asyncio
import sqlite3

from proxy.observability import worker_stats
from proxy.observability.http_metrics import HttpStats
from proxy.observability.telemetry import IngestStats, build_registry
from proxy.storage import CountRow, JournalEntry, Store
from proxy.storage.shards.reader import backlog_bytes
from proxy.storage.shards.shard_store import ShardStore
from proxy.workers import counters_file
from tests.support import this_hour

HOUR = this_hour()


def entry(yes: int) -> JournalEntry:
    return JournalEntry("development", HOUR + 10, [CountRow("app", "f", HOUR, yes, 0)])


def crash(store: Store) -> None:
    """The process is gone: nothing after the last commit runs (no fold, no close)."""
    store.writer._task.cancel()
    store._db.close()
    store._db = None
    store.writer = None
    store.shards.close()


async def abandon_reader(store: Store) -> None:
    await store._reader.close()
    store._reader = None


def shard_ids(path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT id FROM journal ORDER BY id")]


def watermark(path, shard: str = "ingest-1") -> int | None:
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT last_id FROM shard_watermarks WHERE shard = ?", (shard,)).fetchone()
    return row[0] if row else None


async def primary_and_shard(tmp_path) -> tuple:
    """An open primary store and an open worker shard beside it: (primary path, store, shard)."""
    primary = tmp_path / "metrics-proxy.db"
    store = Store(primary, ingest_processes=2)  # beside a live worker: new shard rows keep coming
    await store.open()
    shard = ShardStore(tmp_path / "ingest-1.db", primary, "FULL")
    await shard.open()
    return primary, store, shard


async def post_each(shard: ShardStore, yeses) -> None:
    """One acknowledged post per count, in order (journal ids follow)."""
    for yes in yeses:
        await shard.append([entry(yes)])


async def yes_total(store: Store) -> int:
    return sum(row[3] for row in await store.totals())


async def test_shard_rows_count_once_across_a_clean_restart(tmp_path):
    primary, store, shard = await primary_and_shard(tmp_path)
    for yes in (1, 2, 4):
        assert await shard.append([entry(yes)]) is True
    await store.append([entry(16)])  # the primary's own journal folds beside the shard
    assert await yes_total(store) == 23  # a read pulls the shard first: read-your-writes
    assert watermark(primary) == 3
    await store.close()

    store = Store(primary)
    await store.open()
    assert store.replayed_entries == 0  # everything was folded and marked
    assert await yes_total(store) == 23
    await shard.close()
    await store.close()


async def test_a_crash_between_pull_and_fold_counts_the_rows_once(tmp_path):
    primary, store, shard = await primary_and_shard(tmp_path)
    await shard.append([entry(1)])
    store.fold()
    await shard.append([entry(2)])
    await shard.append([entry(4)])
    assert store.shards.pull(store.writer.deltas) == 2  # pulled into memory, not folded
    crash(store)
    await abandon_reader(store)
    assert watermark(primary) == 1

    for replayed in (2, 0):  # the crashed start replays the two rows; the next start nothing
        store = Store(primary)
        await store.open()
        assert store.replayed_entries == replayed
        assert await yes_total(store) == 7
        assert watermark(primary) == 3
        await store.close()
    await shard.close()


async def test_a_failed_fold_keeps_pulled_rows_for_the_next_one(tmp_path):
    primary, store, shard = await primary_and_shard(tmp_path)
    await shard.append([entry(5)])
    # Another connection holds the write lock: the fold cannot commit and rolls back.
    blocker = sqlite3.connect(primary, timeout=0)
    blocker.execute("BEGIN IMMEDIATE")
    store.db.execute("PRAGMA busy_timeout = 0")
    assert store.fold() is False
    assert watermark(primary) is None
    blocker.execute("ROLLBACK")
    blocker.close()
    assert store.fold() is True
    assert await yes_total(store) == 5
    assert watermark(primary) == 1
    await store.close()
    await shard.close()


async def test_the_worker_trims_folded_rows_and_never_reuses_an_id(tmp_path):
    primary, store, shard = await primary_and_shard(tmp_path)
    shard_path = shard.path
    await post_each(shard, (1, 2))
    store.fold()
    await shard.append([entry(4)])  # id 3: above the mark, must stay
    assert shard.trim() == 2
    assert shard_ids(shard_path) == [3]
    store.fold()
    assert shard.trim() == 1
    assert shard_ids(shard_path) == []  # empty: max(id) alone would restart at 1
    await shard.close()

    shard = ShardStore(shard_path, primary, "FULL")
    await shard.open()
    await shard.append([entry(8)])
    assert shard_ids(shard_path) == [4]
    assert await yes_total(store) == 15
    await shard.close()
    await store.close()


async def test_the_worker_backlog_bounds_the_unfolded_rows_and_shrinks_as_the_primary_folds(tmp_path):
    """The backlog a worker throttles on is counted from marks, not summed over its rows: it must
    never be below the bytes of the rows the primary has not folded, and must drop once they are."""
    primary, store, shard = await primary_and_shard(tmp_path)

    def unfolded_bytes() -> int:
        return backlog_bytes(shard._db, watermark(primary) or 0)

    for step in range(6):
        await post_each(shard, range(1, 4))
        if step % 2:
            store.fold()  # the primary pulls and folds: the watermark passes every row so far
        shard.sync()
        assert shard.backlog() >= unfolded_bytes()
        if step % 2:
            assert unfolded_bytes() == 0
            assert shard.backlog() == 0
        else:
            assert shard.backlog() == unfolded_bytes() > 0
    await shard.append([entry(1)])  # committed after the last sync: counted by backlog() at once
    assert shard.backlog() == unfolded_bytes() > 0
    store.shards.pull(store.writer.deltas)  # pulled, not folded: the watermark has not moved
    await shard.append([entry(2)])
    shard.sync()
    assert shard.backlog() == unfolded_bytes() > 0
    shard.sync(exact=True)  # summed from the rows (near the limit): the same figure
    assert shard.backlog() == unfolded_bytes()
    await shard.close()

    # Rows a stopped worker left unfolded count after a restart until the primary folds them.
    shard = ShardStore(shard.path, primary, "FULL")
    await shard.open()
    left = unfolded_bytes()
    assert left > 0 and shard.backlog() == left
    await shard.append([entry(2)])
    assert shard.backlog() == unfolded_bytes() > left
    store.fold()
    shard.sync()
    assert shard.backlog() == unfolded_bytes() == 0
    await shard.close()
    await store.close()


async def test_leftover_shards_of_a_larger_run_are_drained(tmp_path):
    """A shard with no worker any more (workers lowered) is still folded in at start-up."""
    primary = tmp_path / "metrics-proxy.db"
    store = Store(primary)
    await store.open()
    shards = [ShardStore(tmp_path / f"ingest-{k}.db", primary, "FULL") for k in (1, 2, 3)]
    for k, shard in enumerate(shards, start=1):
        await shard.open()
        await shard.append([entry(k * 10)])
        await shard.close()
    crash(store)
    await abandon_reader(store)

    store = Store(primary)
    await store.open()
    assert store.replayed_entries == 3
    assert await yes_total(store) == 60
    await store.close()


async def test_one_worker_at_its_allowance_gets_a_fold_while_another_lags(tmp_path):
    """With a size limit each worker may hold an allowance of unfolded journal; the primary folds
    as soon as one shard it pulled reaches it, whatever the other shards hold, or that worker
    would wait for the periodic fold."""
    primary = tmp_path / "metrics-proxy.db"
    store = Store(primary, max_db_size=8 * 1024 * 1024, ingest_processes=3)
    await store.open()
    busy = ShardStore(tmp_path / "ingest-1.db", primary, "FULL", max_db_size=8 * 1024 * 1024, ingest_processes=3)
    idle = ShardStore(tmp_path / "ingest-2.db", primary, "FULL", max_db_size=8 * 1024 * 1024, ingest_processes=3)
    await busy.open()
    await idle.open()
    pages, free = store.space.limit.pages()
    allowance = store.space.limit.budget.allowance(pages - free, 3)
    folds = store.folds
    written = 0
    while written < allowance // 2:
        await busy.append([entry(1)])
        written = busy.writer.written_bytes
    assert not await store.pull_shards()  # half its allowance: left for the periodic fold
    while written < allowance:
        await busy.append([entry(1)])
        written = busy.writer.written_bytes
    assert await store.pull_shards()
    assert await store.fold_in_chunks()
    assert store.folds == folds + 1
    assert watermark(primary, "ingest-1") == busy.writer.last_journal_id
    for shard in (busy, idle):
        await shard.close()
    await store.close()


async def test_a_worker_at_its_allowance_holds_a_post_until_the_primary_folds_and_says_so(tmp_path):
    """Back-pressure: over its allowance a worker neither refuses nor stores past the bound; it
    holds the post until the primary has folded, then commits it. The primary's scrape counts the
    held posts from the worker's counter file."""
    size = 8 * 1024 * 1024
    primary = tmp_path / "metrics-proxy.db"
    store = Store(primary, max_db_size=size, ingest_processes=2)
    await store.open()
    shard = ShardStore(tmp_path / "ingest-1.db", primary, "FULL", max_db_size=size, ingest_processes=2)
    await shard.open()
    sent = 0
    while shard.backlog() < shard.backlog_limit:
        await shard.append([entry(1)])
        sent += 1
    held = asyncio.create_task(shard.append([entry(1)]))
    await asyncio.sleep(0.2)
    assert not held.done() and shard.backlog_waits == 1
    assert await store.pull_shards()  # the shard is at its allowance: the primary folds it
    assert await store.fold_in_chunks()
    assert await asyncio.wait_for(held, 2) is True
    store.fold()
    assert await yes_total(store) == sent + 1

    counters_file.write(worker_stats.stats_path(tmp_path, 1), IngestStats(), HttpStats(), shard.backlog_waits)
    registry = build_registry(store, IngestStats(), workers=lambda: worker_stats.read_all(tmp_path, 2))
    assert registry.get_sample_value("metrics_proxy_worker_backlog_waits_total") == 1
    await shard.close()
    await store.close()


async def test_a_sliced_pull_takes_every_row_once_a_slice_at_a_time(tmp_path):
    _, store, shard = await primary_and_shard(tmp_path)
    await post_each(shard, range(1, 41))
    row_bytes = backlog_bytes(shard._db, 0) // 40
    slices = []
    while True:
        before = store.shards.pulled_entries
        more = store.shards.pull_slice(store.writer.deltas, 5 * row_bytes)
        slices.append(store.shards.pulled_entries - before)
        if not more:
            break
    assert len(slices) > 2 and max(slices) <= 16  # about five rows' bytes, read SLICE_ROWS at a time
    assert sum(slices) == 40
    assert store.shards.pull(store.writer.deltas) == 0  # nothing left, nothing taken twice
    assert await yes_total(store) == sum(range(1, 41))
    await shard.close()
    await store.close()


async def test_the_worker_trims_folded_rows_in_slices_and_keeps_the_rest(tmp_path):
    _, store, shard = await primary_and_shard(tmp_path)
    await post_each(shard, range(1, 301))
    assert store.fold()
    await shard.append([entry(1000)])  # above the watermark: must stay
    trimmed_before = shard.trimmed
    assert await shard.trim_in_slices() > 1  # from 128 ids a slice, adapting to its duration
    assert shard.trimmed - trimmed_before == 300
    assert shard_ids(tmp_path / "ingest-1.db") == [301]
    assert await yes_total(store) == sum(range(1, 301)) + 1000
    await shard.close()
    await store.close()
