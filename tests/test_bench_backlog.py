"""The drain and memory benchmarks are only as honest as their backlog: check it holds exactly the
distinct pending keys and counts it claims, spread over the minutes of the hour before."""

from __future__ import annotations

import asyncio
import time

from bench.backlog import fill_backlog
from proxy.storage import Store


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


def test_outage_then_recovery_drains_a_small_backlog_exactly(tmp_path):
    """The drain and memory benchmarks' whole procedure on a small backlog, so a broken benchmark
    shows up in the test suite rather than on the next benchmark run."""
    from bench.backlog import outage_then_recovery
    from bench.recorder import recording_upstream

    with recording_upstream() as upstream:
        total, _ = fill_backlog(tmp_path / "data", 2_000)
        drained = outage_then_recovery(upstream, tmp_path / "data", total, timeout=120)
    assert drained["delivered_counts"] == total
    assert drained["metric_rows"] == 2_000
    assert drained["refused_requests"] >= 1  # the outage was real: a send was refused first
    assert drained["pending_rows_after_drain"] == 0
