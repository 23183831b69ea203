"""kill -9 a real proxy under concurrent load: no acknowledged count is ever lost.

After every kill and restart, the stored total is at least the sum of the counts answered 202 and
at most that sum plus the counts of requests that were still in flight when the kill came.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sqlite3
import time

import aiohttp
import pytest

from tests.support import (
    CLIENT_TOKEN,
    ProxyProcess,
    epoch_ms,
    stored_yes_last_hour,
    wait_for_log,
)

CYCLES = int(os.environ.get("CRASH_CYCLES", "4"))
WORKERS = 16
WORKER_LISTENING = "worker 1 listening"


class Ledger:
    def __init__(self) -> None:
        self.acked = 0
        self.in_flight = 0
        self.unknown = 0  # in flight when the process died: may or may not be stored


async def load(url: str, ledger: Ledger, stop: asyncio.Event, seed: int) -> None:
    rng = random.Random(seed)
    async with aiohttp.ClientSession(headers={"Authorization": CLIENT_TOKEN}) as session:
        while not stop.is_set():
            yes = rng.randint(1, 9)
            now = time.time()  # the proxy process runs on the same (possibly shifted) system clock
            body = {"appName": f"app-{seed % 4}", "instanceId": f"i-{seed}",
                    "bucket": {"start": epoch_ms(now - 1), "stop": epoch_ms(now),
                               "toggles": {f"flag-{rng.randint(0, 20)}": {"yes": yes, "no": 0}}}}
            ledger.in_flight += yes
            try:
                async with session.post(url + "/api/client/metrics", json=body) as resp:
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                ledger.in_flight -= yes
                ledger.unknown += yes
                return
            ledger.in_flight -= yes
            if status == 202:
                ledger.acked += yes


def start(proxy: ProxyProcess, processes: int, starts: int) -> None:
    proxy.start()
    if processes > 1:  # the ingest worker takes connections too before the load begins
        wait_for_log(proxy, WORKER_LISTENING, starts)


@pytest.mark.parametrize("processes", [1, 2])
async def test_kill_9_under_load_never_loses_an_acknowledged_count(tmp_path, processes):
    """With `workers = 2` the kill hits the primary: its worker dies with it (PR_SET_PDEATHSIG) and
    the counts the worker acknowledged are replayed from its shard at the next start."""
    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_WORKERS": str(processes)})
    ledger = Ledger()
    rng = random.Random(1234)
    try:
        start(proxy, processes, 1)
        for cycle in range(CYCLES):
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(proxy.url, ledger, stop, seed=cycle * 100 + w)) for w in range(WORKERS)]
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            proxy.kill()  # SIGKILL mid-load: no shutdown code runs
            stop.set()
            await asyncio.gather(*workers)
            start(proxy, processes, cycle + 2)
            stored = await stored_yes_last_hour(proxy.url)
            assert ledger.acked > 0
            assert ledger.acked <= stored <= ledger.acked + ledger.unknown, (cycle, ledger.acked, stored, ledger.unknown)
    finally:
        proxy.stop()
    # The kills really landed between a commit and its fold: acknowledged work was replayed.
    replayed = [int(n) for n in re.findall(r"replayed (\d+) journal entries", proxy.log())]
    assert len(replayed) == CYCLES + 1 and sum(replayed) > 0
    if processes > 1:  # the worker took its share of the load (rows of its shard were folded)
        with sqlite3.connect(tmp_path / "data" / "metrics-proxy.db") as db:
            (last_id,) = db.execute("SELECT last_id FROM shard_watermarks WHERE shard = 'ingest-1'").fetchone()
        assert last_id > 0
