"""The read-answer cache: the same answers with and without it and with and without gzip, and
never an answer older than the data (new ingest, pruning) or than its window (the injected clock)."""

from __future__ import annotations

import gzip
from urllib.parse import quote

import aiohttp
import pytest

from proxy.api.state import ANSWER_CACHE, STORE
from proxy.app import retention_policy
from tests.reads_support import RECORDED_AT, post, post_recorded_traffic
from tests.support import admin_headers, hour_start, iso

APP = "billing app/eu ✓"
FLAGS = {f"flag-{i:02d}": {"yes": i, "no": 1} for i in range(40)}


def metrics(at: float, app: str, toggles: dict, instance: str = "i-1") -> dict:
    """A metrics body whose bucket is the minute from 5 to 4 minutes before `at` (the clock)."""
    return {"appName": app, "instanceId": instance,
            "bucket": {"start": iso(at - 300), "stop": iso(at - 240), "toggles": toggles}}


def register(at: float, app: str, instance: str = "i-1") -> dict:
    return {"appName": app, "instanceId": instance, "strategies": ["default", "flexibleRollout"],
            "started": iso(at - 360), "interval": 10000}


def read_paths() -> list[str]:
    app = quote(APP, safe="")
    return [
        "/api/client/metrics/feature-toggles",
        "/api/client/seen-toggles",
        "/api/client/applications",
        "/api/client/applications?strategyName=flexibleRollout",
        f"/api/client/applications/{app}",
        "/api/client/seen-apps",
        "/api/admin/metrics/applications",
        "/api/admin/metrics/applications?limit=1&sortBy=updatedAt&sortOrder=desc",
        f"/api/admin/metrics/applications/{app}",
        f"/api/admin/metrics/applications/{app}/overview",
        f"/api/admin/metrics/instances/{app}/environment/development",
        "/api/admin/client-metrics/features/flag-07/raw?hoursBack=48",
        "/api/admin/client-metrics/features/flag-07/raw",
        "/api/admin/client-metrics/features/flag-07",
    ]


async def fill(client, clock) -> None:
    """The recorded traffic and some of our own: the clock must stand at the recording (RECORDED_AT)."""
    assert clock.now() == RECORDED_AT
    await post_recorded_traffic(client)
    for app in (APP, "other-app"):
        await post(client, "/api/client/register", register(clock.now(), app))
        await post(client, "/api/client/metrics", metrics(clock.now(), app, FLAGS))


async def get_raw(client, path: str, gzip_ok: bool) -> tuple[bytes, dict]:
    """Over real HTTP without client-side decompression: the bytes as they went on the wire."""
    headers = {**admin_headers(), "Accept-Encoding": "gzip" if gzip_ok else "identity"}
    async with (aiohttp.ClientSession(auto_decompress=False) as session,
                session.get(client.make_url(path), headers=headers) as response):
        assert response.status == 200, await response.text()
        return await response.read(), dict(response.headers)


def decoded(body: bytes, headers: dict) -> bytes:
    return gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body


@pytest.fixture
async def cached_and_uncached(make_client, tmp_path, clock):
    clock.set(RECORDED_AT)
    cached = await make_client(data_dir=str(tmp_path / "cached"))
    uncached = await make_client(data_dir=str(tmp_path / "uncached"), read_cache_max_bytes=0)
    for client in (cached, uncached):
        await fill(client, clock)
    return cached, uncached


async def test_every_answer_is_the_same_cached_or_not_gzipped_or_not(cached_and_uncached):
    cached, uncached = cached_and_uncached
    gzipped_paths = 0
    for path in read_paths():
        reference, plain_headers = await get_raw(uncached, path, gzip_ok=False)
        assert "Content-Encoding" not in plain_headers
        answers = [
            await get_raw(uncached, path, gzip_ok=True),
            await get_raw(cached, path, gzip_ok=False),  # computed
            await get_raw(cached, path, gzip_ok=True),  # from the cache, compressed now
            await get_raw(cached, path, gzip_ok=True),  # the compressed variant, cached
            await get_raw(cached, path, gzip_ok=False),
        ]
        for body, headers in answers:
            assert decoded(body, headers) == reference, path
        big = len(reference) >= 2048
        assert [h.get("Content-Encoding") for _, h in answers] == [
            "gzip" if big else None, None, "gzip" if big else None, "gzip" if big else None, None], path
        assert all((h.get("Vary") == "Accept-Encoding") == big for _, h in answers), path
        gzipped_paths += big
    assert gzipped_paths >= 4  # the large answers really went compressed
    cache = cached.app[ANSWER_CACHE]
    assert cache.hits == 3 * len(read_paths()) and cache.misses == len(read_paths())
    assert uncached.app[ANSWER_CACHE].hits == 0 and len(uncached.app[ANSWER_CACHE]) == 0


async def read(client, path: str):
    response = await client.get(path, headers=admin_headers())
    assert response.status == 200, await response.text()
    return await response.json()


async def test_a_read_right_after_a_202_sees_the_new_count(client, clock):
    at = clock.now()
    cache = client.app[ANSWER_CACHE]
    raw = "/api/admin/client-metrics/features/f1/raw?hoursBack=1"
    await post(client, "/api/client/metrics", metrics(at, "app-a", {"f1": {"yes": 3, "no": 1}}))
    for expected in (3, 5, 6):
        assert (await read(client, "/api/client/metrics/feature-toggles"))["lastHour"]["f1"]["yes"] == expected
        assert (await read(client, "/api/client/seen-toggles"))[0]["metricsCount"] == expected + 1
        assert (await read(client, raw))["data"][0]["yes"] == expected
        hits = cache.hits
        assert (await read(client, raw))["data"][0]["yes"] == expected  # unchanged data: from the cache
        assert cache.hits == hits + 1
        await post(client, "/api/client/metrics", metrics(at, "app-a", {"f1": {"yes": 2 if expected == 3 else 1}}))


async def test_registration_moves_the_data_version_too(client, clock):
    await post(client, "/api/client/register", register(clock.now(), "app-a"))
    assert [a["appName"] for a in (await read(client, "/api/client/applications"))["applications"]] == ["app-a"]
    await post(client, "/api/client/register", register(clock.now(), "app-b"))
    assert [a["appName"] for a in (await read(client, "/api/client/applications"))["applications"]] == [
        "app-a", "app-b"]


async def test_sliding_windows_expire_at_their_exact_edges(client, clock):
    received = clock.now()  # 30 minutes into the hour, on a whole second
    await post(client, "/api/client/register", register(received, "app-a"))
    await post(client, "/api/client/metrics", metrics(received, "app-a", {"f1": {"yes": 3, "no": 1}}))
    cache = client.app[ANSWER_CACHE]

    async def at(moment: float, path: str):
        clock.set(moment)
        return await read(client, path)

    toggles = "/api/client/metrics/feature-toggles"
    # lastMinute covers the current and the previous minute bucket: xx:30 until xx:31:59.999
    assert (await at(received, toggles))["lastMinute"] == {"f1": {"yes": 3, "no": 1}}
    hits = cache.hits
    assert (await at(received + 59.5, toggles))["lastMinute"] == {"f1": {"yes": 3, "no": 1}}
    assert cache.hits == hits + 1  # same minute and same data: served from the cache
    assert (await at(received + 119.5, toggles))["lastMinute"] == {"f1": {"yes": 3, "no": 1}}
    assert cache.hits == hits + 1  # the next minute: computed again
    assert (await at(received + 120, toggles))["lastMinute"] == {}
    assert (await at(received + 120, toggles))["lastHour"] == {"f1": {"yes": 3, "no": 1}}

    seen = "/api/client/seen-toggles"
    assert [a["seenToggles"] for a in await at(received + 3599, seen)] == [["f1"]]
    assert [a["seenToggles"] for a in await at(received + 3600, seen)] == [["f1"]]  # >= now - 1 h
    assert await at(received + 3600.25, seen) == []

    apps = "/api/client/applications"
    assert len((await at(received + 2 * 86400 - 1, apps))["applications"]) == 1
    assert len((await at(received + 2 * 86400, apps))["applications"]) == 1
    assert (await at(received + 2 * 86400 + 0.5, apps))["applications"] == []

    instances = "/api/admin/metrics/instances/app-a/environment/development"
    assert len((await at(received + 86400, instances))["instances"]) == 1
    assert (await at(received + 86400 + 0.5, instances))["instances"] == []


async def test_hour_buckets_expire_when_the_hour_turns(client, clock):
    # The clock is 30 minutes into its hour, and the bucket (5 to 4 minutes before) in the same hour.
    await post(client, "/api/client/metrics", metrics(clock.now(), "app-a", {"f1": {"yes": 3, "no": 1}}))
    hour = hour_start(clock.now())
    raw = "/api/admin/client-metrics/features/f1/raw?hoursBack=1"
    summary = "/api/admin/client-metrics/features/f1"
    clock.set(hour + 3599.5)
    assert [row["yes"] for row in (await read(client, raw))["data"]] == [3]
    assert [u["yes"] for u in (await read(client, summary))["lastHourUsage"]] == [3]
    clock.set(hour + 3600)  # the next hour: the last hour starts at the bucket's hour exactly, so it counts
    assert (await read(client, raw))["data"] == []  # hoursBack=1 is the new hour alone
    assert [u["yes"] for u in (await read(client, summary))["lastHourUsage"]] == [3]
    clock.set(hour + 3600.5)
    assert (await read(client, summary))["lastHourUsage"] == []
    assert (await read(client, summary))["seenApplications"] == []


async def test_pruning_makes_cached_answers_stale(make_client, make_settings, clock):
    client = await make_client()
    await post(client, "/api/client/register", register(clock.now(), "app-a"))
    await post(client, "/api/client/metrics", metrics(clock.now(), "app-a", {"f1": {"yes": 3, "no": 1}}))
    # seen-apps and an app's details do not depend on the clock: only data changes make them stale
    before = await read(client, "/api/client/seen-apps")
    assert list(before) == ["f1"]
    assert (await read(client, "/api/client/applications/app-a"))["seenToggles"] == ["f1"]
    clock.advance(49 * 3600)
    assert await read(client, "/api/client/seen-apps") == before  # nothing pruned yet: still true
    deleted = await client.app[STORE].prune(retention_policy(make_settings()), clock.now())
    assert deleted["flag_seen"] == 1 and deleted["instances"] == 1
    assert await read(client, "/api/client/seen-apps") == {}
    response = await client.get("/api/client/applications/app-a", headers=admin_headers())
    assert response.status == 404


async def test_the_entry_bound_evicts_and_answers_stay_right(make_client, clock):
    clock.set(RECORDED_AT)
    client = await make_client(read_cache_max_entries=2)
    await fill(client, clock)
    cache = client.app[ANSWER_CACHE]
    first = [await read(client, path) for path in read_paths()]
    assert len(cache) == 2 and cache.evictions == len(read_paths()) - 2
    assert [await read(client, path) for path in read_paths()] == first
    assert cache.hits == 0  # each entry was evicted before its path came round again
    scrape = await (await client.get("/internal-backstage/prometheus")).text()
    assert f"metrics_proxy_read_cache_evictions_total {float(cache.evictions)}" in scrape
    assert f"metrics_proxy_read_cache_misses_total {float(2 * len(read_paths()))}" in scrape


async def test_the_byte_bound_keeps_large_answers_out(make_client, clock):
    clock.set(RECORDED_AT)
    client = await make_client(read_cache_max_bytes=4096)
    await fill(client, clock)
    cache = client.app[ANSWER_CACHE]
    await read(client, "/api/client/seen-apps")  # larger than the whole bound
    assert len(cache) == 0
    await read(client, "/api/admin/client-metrics/features/flag-07")
    assert len(cache) == 1 and 0 < cache.bytes <= 4096
