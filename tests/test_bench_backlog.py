"""The drain and memory benchmarks are only as honest as their backlog: check it holds exactly the
distinct pending keys and counts it claims, spread over the minutes of the hour before."""

from __future__ import annotations

import asyncio
import time

from bench.backlog import fill_backlog
from proxy.store import Store


async def pending(path):
    store = Store(path)
    await store.open()
    try:
        return await store.pending_by_environment()
    finally:
        await store.close()


def test_fill_backlog_leaves_the_claimed_pending_keys_and_counts(tmp_path):
    total, _ = fill_backlog(tmp_path / "data", 25_000)  # runs its own event loop, as the benchmarks do

    [(environment, rows, counts, oldest)] = asyncio.run(pending(tmp_path / "data" / "metrics-proxy.db"))
    assert (environment, rows, counts) == ("development", 25_000, total)
    assert total == sum(1 + k % 7 + k % 3 for k in range(25_000))
    assert oldest == int(time.time() // 3600 * 3600) - 3600
