"""`workers = 2`: a real primary and its ingest worker on one port (SO_REUSEPORT), real loopback
connections. Totals are exact, both processes take ingest, requests the worker does not ingest
itself reach the primary, and kill -9 / SIGTERM of either process loses nothing acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import time

import aiohttp
from aiohttp import web

from tests.scrape_support import samples
from tests.storage_support import SMALL_STORE
from tests.support import (
    ADMIN_TOKEN,
    CLIENT_TOKEN,
    ProxyProcess,
    epoch_ms,
    iso,
    stored_yes_last_hour,
    this_hour,
    wait_for_log,
)
from tests.test_token_validation import UPSTREAM_CLIENT, FakeUnleash

CONNECTIONS = 32
LISTENING = "worker 1 listening"


def metrics(app: str, yes: int) -> dict:
    now = time.time()  # the proxy processes run on the same (possibly shifted) system clock
    return {"appName": app, "instanceId": "i-1",
            "bucket": {"start": epoch_ms(now - 1), "stop": epoch_ms(now), "toggles": {"flag": {"yes": yes, "no": 0}}}}


def start_with_worker(tmp_path) -> ProxyProcess:
    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_WORKERS": "2"}).start()
    wait_for_log(proxy, LISTENING)
    return proxy


def worker_pids(proxy: ProxyProcess) -> list[int]:
    return [int(pid) for pid in re.findall(r"worker 1 started \(pid (\d+)\)", proxy.log())]


def shard_watermark(proxy: ProxyProcess) -> int:
    with sqlite3.connect(proxy.data_dir / "metrics-proxy.db") as db:
        row = db.execute("SELECT last_id FROM shard_watermarks WHERE shard = 'ingest-1'").fetchone()
    return row[0] if row else 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class Ledger:
    def __init__(self) -> None:
        self.acked = 0
        self.unknown = 0  # no answer (the process died): may or may not be stored


async def post_until(url: str, ledger: Ledger, stop: asyncio.Event, seed: int) -> None:
    """One connection posting distinct counts until told to stop or its connection breaks."""
    async with aiohttp.ClientSession(headers={"Authorization": CLIENT_TOKEN},
                                     connector=aiohttp.TCPConnector(limit=1)) as session:
        n = 0
        while not stop.is_set():
            n += 1
            yes = seed * 1000 + n
            try:
                async with session.post(url + "/api/client/metrics", json=metrics(f"app-{seed}", yes)) as resp:
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError):
                ledger.unknown += yes
                return
            if status == 202:
                ledger.acked += yes
            await asyncio.sleep(0)


async def run_load(url: str, ledger: Ledger, seconds: float, during=None) -> None:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(post_until(url, ledger, stop, seed)) for seed in range(1, CONNECTIONS + 1)]
    await asyncio.sleep(seconds)
    if during is not None:
        await during()
    stop.set()
    await asyncio.gather(*tasks)


async def test_both_processes_take_ingest_and_totals_are_exact(tmp_path):
    proxy = start_with_worker(tmp_path)
    try:
        ledger = Ledger()
        await run_load(proxy.url, ledger, 2.0)
        assert ledger.unknown == 0 and ledger.acked > 0
        # A read right after the 202s sees every count, wherever it was committed.
        assert await stored_yes_last_hour(proxy.url) == ledger.acked
        assert shard_watermark(proxy) > 0  # the worker committed part of the load to its shard
        assert proxy.terminate() == 0
    finally:
        proxy.stop()


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + "/internal-backstage/prometheus") as resp:
            assert resp.status == 200
            return await resp.text()


async def test_the_primary_scrape_counts_the_workers_requests_too(tmp_path):
    proxy = start_with_worker(tmp_path)
    try:
        ledger = Ledger()
        await run_load(proxy.url, ledger, 1.5)
        assert ledger.unknown == 0
        assert shard_watermark(proxy) > 0 or (proxy.data_dir / "ingest-1.db").exists()
        # The worker writes its counters every second; wait for the sum to catch up, then check it.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            text = await scrape(proxy.url)
            counted = samples(text, "metrics_proxy_ingest_counts_total")[""]
            if counted == ledger.acked or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert counted == ledger.acked  # yes counts of both processes (no = 0 in these posts)
        requests = samples(text, "metrics_proxy_ingest_requests_total")['{kind="client_metrics"}']
        http = samples(text, "metrics_proxy_http_requests_total")[
            '{method="POST",route="/api/client/metrics",status="202"}']
        durations = samples(text, "metrics_proxy_http_request_duration_seconds_count")['{route="/api/client/metrics"}']
        assert requests == http == durations
        # The primary's own share: the scrape's total minus what the worker's counters file says.
        worker = json.loads((proxy.data_dir / "ingest-1.stats").read_text())
        own = requests - worker["ingest_requests"].get("client_metrics", 0)
        assert 0 < own < requests  # both processes answered some of them, and the scrape has both
    finally:
        proxy.terminate()


async def test_reads_bulk_and_registrations_work_on_every_connection(tmp_path):
    """Separate connections land on both processes; what the worker does not ingest itself
    (reads, bulk with its Idempotency-Key) is passed to the primary and answered unchanged."""
    proxy = start_with_worker(tmp_path)
    bulk = {"applications": [], "metrics": [{"featureName": "bulk-flag", "appName": "chained", "environment":
                                             "development", "timestamp": iso(this_hour()), "yes": 5, "no": 1}]}
    try:
        for n in range(16):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                headers = {"Authorization": CLIENT_TOKEN, "Idempotency-Key": "batch-1"}
                async with session.post(proxy.url + "/api/client/metrics/bulk", json=bulk, headers=headers) as resp:
                    assert resp.status == 202, await resp.text()
                async with session.post(proxy.url + "/api/client/register", headers={"Authorization": CLIENT_TOKEN},
                                        json={"appName": "reg", "instanceId": f"i-{n}", "strategies": [],
                                              "started": iso(this_hour()), "interval": 15000}) as resp:
                    assert resp.status == 202
                async with session.get(proxy.url + "/api/admin/metrics/applications",
                                       headers={"Authorization": ADMIN_TOKEN}) as resp:
                    assert resp.status == 200
                    names = {a["appName"] for a in (await resp.json())["applications"]}
                    assert "reg" in names
                async with session.get(proxy.url + "/api/client/metrics/feature-toggles",
                                       headers={"Authorization": CLIENT_TOKEN}) as resp:
                    assert resp.status == 403  # status and error body come back from the primary as-is
                    assert (await resp.json())["name"] == "ForbiddenError"
        # Bulk posts passed on keep the client's address (the primary believes the worker's header).
        for n in range(16):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                chained = {"applications": [{"appName": "edge", "instanceId": f"edge-{n}",
                                             "environment": "development"}], "metrics": []}
                async with session.post(proxy.url + "/api/client/metrics/bulk", json=chained,
                                        headers={"Authorization": CLIENT_TOKEN}) as resp:
                    assert resp.status == 202
        async with aiohttp.ClientSession(headers={"Authorization": ADMIN_TOKEN}) as session:
            async with session.get(proxy.url + "/api/admin/metrics/instances/edge/environment/development") as resp:
                seen = (await resp.json())["instances"]
        assert len(seen) == 16 and {i["clientIp"] for i in seen} == {"127.0.0.1"}
        # The same Idempotency-Key over 16 connections (both processes): counted once.
        async with aiohttp.ClientSession(headers={"Authorization": ADMIN_TOKEN}) as session:
            async with session.get(proxy.url + "/api/client/metrics/feature-toggles") as resp:
                assert (await resp.json())["lastHour"]["bulk-flag"] == {"yes": 5, "no": 1}
        # What the worker passed on is counted once, by the primary that answered it (the worker
        # writes its own counters every second: wait for one write).
        await asyncio.sleep(1.5)
        http = samples(await scrape(proxy.url), "metrics_proxy_http_requests_total")
        assert http['{method="POST",route="/api/client/metrics/bulk",status="202"}'] == 32
        assert not [labels for labels in http if "tail" in labels]
    finally:
        proxy.stop()


async def test_kill_9_of_the_worker_loses_nothing_and_it_is_restarted(tmp_path):
    proxy = start_with_worker(tmp_path)
    try:
        (first,) = worker_pids(proxy)
        ledger = Ledger()

        async def kill_worker() -> None:
            os.kill(first, signal.SIGKILL)
            await asyncio.sleep(0.3)

        await run_load(proxy.url, ledger, 1.0, during=kill_worker)
        assert ledger.acked > 0
        stored = await stored_yes_last_hour(proxy.url)
        assert ledger.acked <= stored <= ledger.acked + ledger.unknown
        wait_for_log(proxy, LISTENING, 2)
        assert f"worker 1 (pid {first}) exited unexpectedly" in proxy.log()
        (_, second) = worker_pids(proxy)
        assert alive(second) and not alive(first)
        # The restarted worker continues above every id its predecessor used.
        ledger_after = Ledger()
        await run_load(proxy.url, ledger_after, 1.0)
        assert await stored_yes_last_hour(proxy.url) == stored + ledger_after.acked
    finally:
        proxy.stop()


async def test_sigterm_under_load_stops_both_cleanly_and_loses_nothing(tmp_path):
    proxy = start_with_worker(tmp_path)
    (worker,) = worker_pids(proxy)
    ledger = Ledger()
    exit_code: list[int] = []

    async def terminate() -> None:
        exit_code.append(await asyncio.to_thread(proxy.terminate))

    try:
        await run_load(proxy.url, ledger, 1.0, during=terminate)
    finally:
        proxy.stop()
    assert exit_code == [0]
    assert not alive(worker)
    assert "ingest workers stopped" in proxy.log()
    # The final fold drained the shard: nothing in it above the primary's watermark.
    with sqlite3.connect(proxy.data_dir / "ingest-1.db") as db:
        (above,) = db.execute("SELECT count(*) FROM journal WHERE id > ?", (shard_watermark(proxy),)).fetchone()
    assert above == 0 and shard_watermark(proxy) > 0
    proxy.start()
    try:
        assert re.findall(r"replayed (\d+) journal entries", proxy.log())[-1] == "0"
        assert ledger.acked <= await stored_yes_last_hour(proxy.url) <= ledger.acked + ledger.unknown
    finally:
        proxy.stop()


async def test_workers_refuse_too_when_the_primary_store_is_full(tmp_path):
    """max_db_size with "refuse": once the primary refuses, the worker answers the same 503."""
    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_WORKERS": "2",
                                                       "METRICS_PROXY_MAX_DB_SIZE": str(SMALL_STORE)}).start()
    wait_for_log(proxy, LISTENING)

    async def post_fresh(n: int) -> tuple[int, dict | None]:
        flags = {f"r{n:04d}-flag-{j:02d}": {"yes": 1, "no": 0} for j in range(20)}
        now = time.time()
        body = {"appName": "app", "bucket": {"start": epoch_ms(now - 1), "stop": epoch_ms(now), "toggles": flags}}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.post(proxy.url + "/api/client/metrics", json=body,
                                    headers={"Authorization": CLIENT_TOKEN}) as resp:
                return resp.status, (await resp.json() if resp.status == 503 else None)

    try:
        acked, in_a_row, n = 0, 0, 0
        while in_a_row < 10:
            n += 1
            assert n < 3000, "the store never filled up"
            status, _ = await post_fresh(n)
            if status == 202:
                acked += 20
                in_a_row = 0
            else:
                assert status == 503
                in_a_row += 1
        await asyncio.sleep(2.5)  # the worker reads the primary's refusal once a second
        answers = await asyncio.gather(*(post_fresh(10_000 + k) for k in range(24)))
        assert [status for status, _ in answers] == [503] * 24
        assert all(body["name"] == "ServiceUnavailableError" and "full" in body["message"] for _, body in answers)
        assert (proxy.data_dir / "ingest-refused").exists()
        assert await stored_yes_last_hour(proxy.url) == acked  # every acknowledged count, from both processes
        assert shard_watermark(proxy) > 0
    finally:
        proxy.stop()


async def test_tokens_checked_with_the_upstream_are_validated_by_the_primary_only(tmp_path, aiohttp_server):
    """A worker passes a post whose token is not configured to the primary, which asks the
    upstream once and keeps the verdict; the counts land exactly once either way."""
    fake = FakeUnleash()
    upstream_app = web.Application()
    upstream_app.router.add_post("/edge/validate", fake.validate)
    server = await aiohttp_server(upstream_app)
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_WORKERS": "2", "METRICS_PROXY_UPSTREAM_URL": str(server.make_url("/api")),
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_CLIENT}",
    }).start()
    wait_for_log(proxy, LISTENING)
    try:
        for n in range(1, 17):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
                async with session.post(proxy.url + "/api/client/metrics", json=metrics("upstream-app", n),
                                        headers={"Authorization": UPSTREAM_CLIENT}) as resp:
                    assert resp.status == 202, await resp.text()
        assert await stored_yes_last_hour(proxy.url) == sum(range(1, 17))
        assert fake.asked == [UPSTREAM_CLIENT]
    finally:
        proxy.stop()
