"""Health stays quick while the read endpoints answer over a store of many flags.

A real proxy process on a store filled fast through Store.append + Store.fold (as bench/reads.py
fills one): app-000 reported 100,000 flags, nineteen more apps the first 5,000 of them. The largest
answers are read again and again with the answer cache off (each read builds its answer), while
/internal-backstage/health is polled beside them. Before read_max_flags, app-000's answers listed
all 100,000 flags and each read held the event loop for hundreds of milliseconds (at 300,000 flags
health's p99 was 272 ms); now each list stops at 5,000 flags and seen-apps, 5,000 flags x 20 apps,
is built a slice at a time.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from tests.support import ADMIN_TOKEN, ProxyProcess

BIG_APP_FLAGS = 100_000
APPS = 20
SHARED_FLAGS = 5_000  # read_max_flags' default: every other app reported these
READ_SECONDS = 1.0  # per endpoint
POLLERS = 3  # health requests in flight at once, as several probes and clients would be: a stall delays each
HEALTH_P99_MS = 50.0
READS = [
    "/api/client/seen-apps",
    "/api/admin/metrics/applications/app-000",
    "/api/client/applications/app-000",
    "/api/client/seen-toggles",
    "/api/client/metrics/feature-toggles",
]


async def fill(path: Path, now: float) -> None:
    store = Store(path, synchronous="OFF")
    await store.open()
    hour = int(now // 3600 * 3600)
    try:
        for a in range(APPS):
            app = f"app-{a:03d}"
            flags = BIG_APP_FLAGS if a == 0 else SHARED_FLAGS
            await store.append([JournalEntry("development", now, [], [
                InstanceSeen(app, f"{app}-1", "unleash-node-sdk:6.12.1", ["default"], 15.0)])])
            for start in range(0, flags, 5_000):
                await store.append([JournalEntry("development", now, [
                    CountRow(app, f"flag-{k:06d}", hour, 1 + k % 3, k % 2) for k in range(start, min(flags, start + 5_000))
                ])])
                store.fold()
    finally:
        await store.close()


async def poll_health(session: aiohttp.ClientSession, url: str, done: asyncio.Event, sink: list[float]) -> None:
    while not done.is_set():
        started = time.perf_counter()
        async with session.get(url + "/internal-backstage/health") as r:
            await r.read()
            assert r.status == 200
        sink.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.005)


async def read_for(session: aiohttp.ClientSession, url: str, done: asyncio.Event) -> int:
    """Reads of `url`, back to back for READ_SECONDS; then `done` is set."""
    count = 0
    end = time.monotonic() + READ_SECONDS
    while time.monotonic() < end:
        async with session.get(url, headers={"Authorization": ADMIN_TOKEN, "Accept-Encoding": "gzip"}) as r:
            await r.read()
            assert r.status == 200, (url, r.status)
        count += 1
    done.set()
    return count


async def health_beside_reads(url: str) -> tuple[list[float], dict[str, int]]:
    """Health latencies (ms) while each of READS is read back to back; reads per endpoint."""
    health: list[float] = []
    reads: dict[str, int] = {}
    async with aiohttp.ClientSession() as session:
        for path in READS:
            done = asyncio.Event()
            reads[path], *_ = await asyncio.gather(
                read_for(session, url + path, done), *(poll_health(session, url, done, health) for _ in range(POLLERS)))
    return health, reads


@pytest.fixture(scope="module")
def huge_store(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("huge") / "data"
    data.mkdir()
    asyncio.run(fill(data / "metrics-proxy.db", time.time()))
    return data


def test_health_stays_quick_while_huge_reads_are_built(huge_store, proxies):
    proxy = ProxyProcess(huge_store, extra_env={"METRICS_PROXY_READ_CACHE_MAX_BYTES": "0",
                                                "METRICS_PROXY_PRUNE_INTERVAL": "3600"})
    proxies.append(proxy.start(timeout=30))
    health, reads = asyncio.run(health_beside_reads(proxy.url))
    assert all(reads.get(path) for path in READS), reads
    ordered = sorted(health)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    assert p99 < HEALTH_P99_MS, f"health p99 {p99:.1f} ms (max {ordered[-1]:.1f}, n={len(ordered)}) beside {reads}"
