"""The writer folds inline before a fold could outgrow the reserve (storage/capacity/limits.py): that relies on
`Deltas.fold_bytes` being an upper bound of what a fold adds to the database file. Checked here on
a real SQLite file for the shapes that grow tables: distinct keys with long names, many variant
names, registrations with long strategy lists, impact histograms."""

from __future__ import annotations

import random

import pytest

from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from proxy.storage.capacity.limits import PAGE_FILL_SLACK
from proxy.storage.journal import ImpactRow
from tests.support import iso, this_hour

HOUR = this_hour()


def distinct_keys(rng: random.Random, n: int) -> list[JournalEntry]:
    return [
        JournalEntry("production", HOUR + i, [
            CountRow(f"app-{rng.randrange(50)}-" + "a" * rng.randrange(200), f"flag-{i}-{f}-" + "f" * rng.randrange(200),
                     HOUR, rng.randrange(1, 9), rng.randrange(9))
            for f in range(20)
        ])
        for i in range(n)
    ]


def the_same_flags_minute_after_minute(rng: random.Random, n: int) -> list[JournalEntry]:
    """Every minute the whole key set again: after the first minute only per-minute rows are new,
    and fold_bytes charges them less than a new key (Deltas._new_key_bytes)."""
    flags = [f"flag-{f}-" + "f" * rng.randrange(200) for f in range(40)]
    return [
        JournalEntry("production", HOUR + 60 * (i // 10) + i % 10, [
            CountRow(f"app-{i % 10}-" + "a" * 50, flag, HOUR, 1, 0) for flag in flags
        ])
        for i in range(n)
    ]


def many_variants(rng: random.Random, n: int) -> list[JournalEntry]:
    return [
        JournalEntry("production", HOUR + i, [
            CountRow("app", f"flag-{f}", HOUR, 1, 0, {f"variant-{i}-{v}-" + "v" * rng.randrange(100): 1 for v in range(10)})
            for f in range(5)
        ])
        for i in range(n)
    ]


def registrations(rng: random.Random, n: int) -> list[JournalEntry]:
    return [
        JournalEntry("production", HOUR + i, [], [
            InstanceSeen(f"app-{i % 7}", f"instance-{i}-" + "i" * rng.randrange(200), "unleash-node-sdk:6.1.0",
                         [f"strategy-{s}-" + "s" * rng.randrange(50) for s in range(rng.randrange(20))], 15.0,
                         iso(HOUR - 8 * 3600, ".000"), "10.0.0.1", [f"project-{p}" for p in range(rng.randrange(10))])
        ])
        for i in range(n)
    ]


def impact_histograms(rng: random.Random, n: int) -> list[JournalEntry]:
    return [
        JournalEntry("production", HOUR + i, [], [], [
            ImpactRow("app", f"latency_{i % 40}", "histogram", "request latency",
                      f'{{"route":"/r/{i}-' + "x" * rng.randrange(100) + '"}', count=3, sum=1.5,
                      buckets=[(str(b / 10), b) for b in range(1, rng.randrange(2, 30))])
        ])
        for i in range(n)
    ]


@pytest.mark.parametrize("shape", [distinct_keys, the_same_flags_minute_after_minute, many_variants,
                                   registrations, impact_histograms])
async def test_fold_bytes_bounds_what_a_fold_adds_to_the_file(tmp_path, shape):
    store = Store(tmp_path / "bound.db", synchronous="OFF")
    await store.open()
    try:
        rng = random.Random(7)
        for _ in range(3):  # later folds update rows the earlier ones wrote
            await store.append(shape(rng, 300))
            bound = store.writer.deltas.fold_bytes
            page_size = store.pragma("page_size")
            before = store.pragma("page_count")
            assert store.fold()
            grown = (store.pragma("page_count") - before) * page_size
            assert bound > 0
            assert grown <= bound * PAGE_FILL_SLACK, (shape.__name__, grown, bound)
    finally:
        await store.close()


async def test_counts_added_to_known_keys_grow_nothing(tmp_path):
    store = Store(tmp_path / "hot.db", synchronous="OFF")
    await store.open()
    try:
        row = CountRow("app", "flag", HOUR, 1, 0, {"red": 1})
        await store.append([JournalEntry("production", HOUR, [row], [InstanceSeen("app", "i-1")])])
        first = store.writer.deltas.fold_bytes
        await store.append([JournalEntry("production", HOUR + 1, [row], [InstanceSeen("app", "i-1")])] * 100)
        assert store.writer.deltas.fold_bytes == first  # same key, variant and instance: no new rows
    finally:
        await store.close()


async def test_a_flag_in_a_new_minute_of_its_hour_is_charged_its_minute_rows_only(tmp_path):
    store = Store(tmp_path / "minutes.db", synchronous="OFF")
    await store.open()
    try:
        rows = [CountRow("app", f"flag-{f}", HOUR, 1, 0) for f in range(50)]
        await store.append([JournalEntry("production", HOUR, rows)])
        first_minute = store.writer.deltas.fold_bytes
        await store.append([JournalEntry("production", HOUR + 60, rows)])
        second_minute = store.writer.deltas.fold_bytes - first_minute
        assert 0 < second_minute <= first_minute * 6 // 10
        # The same flags under the next hour are new keys again, charged in full.
        await store.append([JournalEntry("production", HOUR + 3600, [CountRow(r.app_name, r.feature_name, HOUR + 3600, 1, 0) for r in rows])])
        assert store.writer.deltas.fold_bytes - first_minute - second_minute == first_minute
    finally:
        await store.close()
