"""Pruning of read history: configurable windows, chunked, and never the outbox."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from proxy.api.state import STORE
from proxy.app import retention_policy
from proxy.storage import CountRow, InstanceSeen, JournalEntry, Store
from proxy.storage.usage.retention import RetentionPolicy, prune_chunk, prune_history
from tests.reads_support import post
from tests.storage_support import UNREACHABLE_UPSTREAM
from tests.support import admin_headers, iso

HOUR = 3600


def table_counts(path) -> dict[str, int]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {
            table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("hourly_counts", "pending_counts", "minute_counts", "flag_seen", "instances")
        }


def entry(received: float, app: str, flags: int) -> JournalEntry:
    hour = int(received // HOUR * HOUR)
    return JournalEntry(
        "development", received,
        [CountRow(app, f"flag-{i}", hour, 1, 1) for i in range(flags)],
        [InstanceSeen(app, "i-1")],
    )


def metrics(app: str, at: float) -> dict:
    """A metrics body whose bucket is the minute from 5 to 4 minutes before `at` (the clock)."""
    return {"appName": app, "instanceId": "i-1",
            "bucket": {"start": iso(at - 300), "stop": iso(at - 240),
                       "toggles": {"f1": {"yes": 4, "no": 1}}}}


async def test_prune_keeps_each_window_and_never_touches_the_outbox(make_client, make_settings, clock):
    proxy = await make_client(upstream=UNREACHABLE_UPSTREAM)  # the clock is 30 minutes into its hour
    await post(proxy, "/api/client/metrics", metrics("old-app", clock.now()))
    store = proxy.app[STORE]
    store.fold()
    policy = retention_policy(make_settings(upstream=UNREACHABLE_UPSTREAM))
    assert policy.forwarding
    path = store.path

    clock.advance(30 * 60)  # minute counts are kept for an hour; nothing else is old yet
    assert set((await store.prune(policy, clock.now())).values()) == {0}
    clock.advance(31 * 60)
    assert await store.prune(policy, clock.now()) == {
        "hourly_counts": 0, "minute_counts": 1, "minute_flag_totals": 1, "minute_app_totals": 1,
        "flag_seen": 0, "instances": 0, "usage_totals": 0}

    clock.advance(47 * HOUR)  # 48 h and a minute after the post, but its hour bucket 48h31m ago
    deleted = await store.prune(policy, clock.now())
    assert deleted == {"hourly_counts": 0, "minute_counts": 0, "minute_flag_totals": 0,
                       "minute_app_totals": 0, "flag_seen": 1, "instances": 1, "usage_totals": 0}
    assert table_counts(path)["hourly_counts"] == 1  # part of its hour is still within 48 h

    clock.advance(HOUR)
    deleted = await store.prune(policy, clock.now())
    assert deleted["hourly_counts"] == 1 and deleted["usage_totals"] == 1  # its all-time usage went with its last hour
    counts = table_counts(path)
    assert counts == {"hourly_counts": 0, "pending_counts": 1, "minute_counts": 0, "flag_seen": 0, "instances": 0}
    apps = await proxy.get("/api/admin/metrics/applications", headers=admin_headers())
    assert (await apps.json())["total"] == 0


async def test_retention_windows_are_configurable(make_client, make_settings, clock):
    proxy = await make_client()
    await post(proxy, "/api/client/metrics", metrics("app", clock.now()))
    policy = retention_policy(make_settings(retention_hours=2, minute_retention_minutes=5,
                                            instance_retention_hours=1))
    assert policy == RetentionPolicy(2, 5, 1, forwarding=False)  # standalone: the outbox ages out too
    proxy.app[STORE].fold()
    clock.advance(HOUR + 60)
    assert await proxy.app[STORE].prune(policy, clock.now()) == {
        "hourly_counts": 0, "minute_counts": 1, "minute_flag_totals": 1, "minute_app_totals": 1,
        "flag_seen": 0, "instances": 1, "pending_counts": 0, "usage_totals": 0}
    clock.advance(2 * HOUR)
    assert await proxy.app[STORE].prune(policy, clock.now()) == {
        "hourly_counts": 1, "minute_counts": 0, "minute_flag_totals": 0, "minute_app_totals": 0,
        "flag_seen": 1, "instances": 0, "pending_counts": 1, "usage_totals": 1}
    assert table_counts(proxy.app[STORE].path)["pending_counts"] == 0  # standalone: it went with its hour


async def test_prune_works_in_small_chunks(tmp_path, clock):
    store = Store(tmp_path / "chunks.db")
    await store.open()
    try:
        await store.append([entry(clock.now() - 100 * HOUR, "old", 25), entry(clock.now(), "new", 3)])
        store.fold()
        db = store._db
        cutoff = RetentionPolicy().cutoffs(clock.now())["hourly_counts"]
        assert prune_chunk(db, "hourly_counts", cutoff, limit=4) == 4  # one chunk, one transaction
        assert not db.in_transaction
        assert table_counts(store.path)["hourly_counts"] == 3 + 21
        deleted = await prune_history(db, RetentionPolicy(), clock.now(), limit=4)
        assert deleted == {"hourly_counts": 21, "minute_counts": 25, "minute_flag_totals": 25,
                           "minute_app_totals": 1, "flag_seen": 25, "instances": 1, "usage_totals": 25}
        counts = table_counts(store.path)
        assert counts == {"hourly_counts": 3, "pending_counts": 28, "minute_counts": 3, "flag_seen": 3,
                          "instances": 1}
    finally:
        await store.close()


async def test_the_background_job_prunes_at_start(tmp_path, make_client, clock):
    store = Store(tmp_path / "data" / "metrics-proxy.db")
    await store.open()
    await store.append([entry(clock.now() - 72 * HOUR, "stale", 5), entry(clock.now(), "fresh", 2)])
    await store.close()

    proxy = await make_client()
    path = proxy.app[STORE].path
    for _ in range(200):  # the first pass runs as the app starts; wait for that task, not a window
        if table_counts(path)["hourly_counts"] == 2:
            break
        await asyncio.sleep(0.01)
    # Standalone, what the store queued for an upstream earlier is history too: the stale hour's
    # 5 pending rows went with it, the fresh hour's 2 stay until they age out.
    assert table_counts(path) == {"hourly_counts": 2, "pending_counts": 2, "minute_counts": 2,
                                  "flag_seen": 2, "instances": 1}


def test_retention_options_come_from_env_and_file(tmp_path):
    from proxy.config import ConfigError, load_settings

    config = tmp_path / "proxy.toml"
    config.write_text("retention_hours = 12\nprune_interval = 5.0\n")
    settings = load_settings(str(config), environ={"METRICS_PROXY_MINUTE_RETENTION_MINUTES": "90"})
    assert retention_policy(settings) == RetentionPolicy(12, 90, 48, forwarding=False)
    assert settings.prune_interval == 5.0
    with pytest.raises(ConfigError, match="retention_hours"):
        load_settings(environ={"METRICS_PROXY_RETENTION_HOURS": "0"})
