"""Crash and shutdown behaviour of the forwarder in a real `python -m proxy serve` process."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys

import aiohttp

from proxy.unleash.store.status import status_report
from tests.forwarding import metrics_body, upstream_env
from tests.support import ADMIN_TOKEN, ProxyProcess, client_headers


async def start_proxy(proxies, tmp_path, stub, **extra) -> ProxyProcess:
    env = upstream_env(stub.url)
    env.update({f"METRICS_PROXY_UPSTREAM_{k.upper()}": str(v) for k, v in extra.items()})
    proxy = ProxyProcess(tmp_path / "data", extra_env=env)
    proxies.append(proxy)
    return await asyncio.to_thread(proxy.start)


async def ingest(proxy: ProxyProcess, toggles: dict[str, tuple[int, int]]) -> None:
    import time

    async with aiohttp.ClientSession() as session:
        async with session.post(proxy.url + "/api/client/metrics", json=metrics_body(toggles, time.time()),
                                headers=client_headers()) as response:
            assert response.status == 202


async def until(condition, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def totals(stub) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            yes, no = out.get(m["featureName"], (0, 0))
            out[m["featureName"]] = (yes + m["yes"], no + m["no"])
    return out


def outbox_status(tmp_path) -> dict:
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'metrics-proxy.db'}?mode=ro", uri=True)
    try:
        return status_report(db)
    finally:
        db.close()


async def test_kill_9_while_a_batch_is_in_flight_resends_it_with_the_same_key(proxies, tmp_path, stub):
    released = asyncio.Event()

    async def hang(request, rec):
        await released.wait()
        return None  # the sender is dead by then; this request never got an answer

    stub.script = [hang]
    proxy = await start_proxy(proxies, tmp_path, stub)
    await ingest(proxy, {"flag-a": (7, 2), "flag-b": (1, 1)})
    await until(lambda: len(stub.received) == 1)
    first_key = stub.received[0].key

    await asyncio.to_thread(proxy.kill)
    released.set()
    restarted = await start_proxy(proxies, tmp_path, stub)
    await until(lambda: stub.delivered())

    assert stub.delivered()[0].key == first_key
    assert totals(stub) == {"flag-a": (7, 2), "flag-b": (1, 1)}
    # The proxy's own instance id is kept in the database, so Unleash sees one instance, not two.
    assert stub.delivered()[0].headers["UNLEASH-INSTANCEID"] == stub.received[0].headers["UNLEASH-INSTANCEID"]
    assert await asyncio.to_thread(restarted.terminate) == 0


async def test_sigterm_after_a_2xx_does_not_resend(proxies, tmp_path, stub):
    proxy = await start_proxy(proxies, tmp_path, stub)
    await ingest(proxy, {"flag-a": (3, 0)})
    await until(lambda: stub.delivered())
    assert await asyncio.to_thread(proxy.terminate) == 0

    restarted = await start_proxy(proxies, tmp_path, stub)
    # `metrics-proxy flush` returns once the restarted proxy has sent everything it had.
    flushed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "proxy", "flush", "--port", str(restarted.port)],
        env={**os.environ, **restarted.extra_env, "METRICS_PROXY_ADMIN_TOKENS": ADMIN_TOKEN},
        capture_output=True, text=True, timeout=60,
    )
    assert flushed.returncode == 0, flushed.stderr
    assert "0 batches left" in flushed.stdout

    assert len(stub.received) == 1 and totals(stub) == {"flag-a": (3, 0)}
    assert await asyncio.to_thread(restarted.terminate) == 0


async def test_sigterm_while_in_backoff_keeps_the_batch_for_the_next_start(proxies, tmp_path, stub):
    stub.default = 503
    proxy = await start_proxy(proxies, tmp_path, stub, retry_initial=5, retry_max=5, shutdown_flush_timeout=1)
    await ingest(proxy, {"flag-a": (4, 4)})
    await until(lambda: stub.received)
    first_key = stub.received[0].key

    assert await asyncio.to_thread(proxy.terminate, 15) == 0

    env = outbox_status(tmp_path)["environments"]["development"]
    assert (env["batches"], env["batch_yes"], env["batch_no"]) == (1, 4, 4)
    stub.default = 202
    restarted = await start_proxy(proxies, tmp_path, stub)
    await until(lambda: stub.delivered())
    assert stub.delivered()[0].key == first_key
    assert totals(stub) == {"flag-a": (4, 4)}
    assert await asyncio.to_thread(restarted.terminate) == 0
    assert outbox_status(tmp_path)["environments"]["development"]["batches"] == 0
