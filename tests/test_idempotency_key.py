"""The receiving side of chained proxies: a bulk post repeated with the same Idempotency-Key is
answered 202 and counted once, also when the repeats arrive together or after a crash."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from proxy.api.state import STORE
from proxy.storage import Store
from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import CountRow, JournalEntry
from tests.storage_support import HOUR, bulk_body, metrics_body, prometheus_value, query
from tests.support import CLIENT_TOKEN, PROD_TOKEN, ProxyProcess, client_headers

BULK = "/api/client/metrics/bulk"


def keyed(key: str, token: str = CLIENT_TOKEN) -> dict[str, str]:
    return {**client_headers(token), "Idempotency-Key": key}


async def yes_of(store: Store, flag: str) -> dict[str, int]:
    """{environment: yes} for `flag` over the whole store."""
    return {env: yes for env, _app, feature, yes, _no in await store.totals() if feature == flag}


async def test_a_repeated_key_is_acknowledged_and_counted_once(client):
    store = client.server.app[STORE]
    for _ in range(3):
        resp = await client.post(BULK, json=bulk_body("development", "chained", yes=5), headers=keyed("batch-1"))
        assert resp.status == 202 and await resp.read() == b""
    resp = await client.post(BULK, json=bulk_body("development", "chained", yes=7), headers=keyed("batch-2"))
    assert resp.status == 202
    assert await yes_of(store, "chained") == {"development": 12}

    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert prometheus_value(text, "metrics_proxy_idempotent_replays_total") == 2
    assert prometheus_value(text, "metrics_proxy_ingest_counts_total") == 12


async def test_concurrent_posts_with_one_key_count_once(client):
    store = client.server.app[STORE]
    posts = [client.post(BULK, json=bulk_body("development", "together", yes=3), headers=keyed("same")) for _ in range(12)]
    assert [r.status for r in await asyncio.gather(*posts)] == [202] * 12
    assert await yes_of(store, "together") == {"development": 3}


async def test_one_key_twice_in_the_same_group_commit_is_stored_once(tmp_path, clock):
    store = Store(tmp_path / "proxy.db")
    await store.open()
    try:
        def entry(yes: int) -> list[JournalEntry]:
            return [JournalEntry("development", clock.now(), [CountRow("app", "grouped", 0, yes, 0)])]

        claim = IdempotencyClaim("development", "k-1", clock.now())
        other = IdempotencyClaim("development", "k-2", clock.now())
        # Queued before the writer task runs: all five share one commit.
        results = await asyncio.gather(
            store.append(entry(1), claim), store.append(entry(1), claim), store.append(entry(10), other),
            store.append(entry(1), claim), store.append(entry(100)),
        )
        assert results == [True, False, True, False, True]
        assert store.writer.stats.commits == 1
        assert await yes_of(store, "grouped") == {"development": 111}
        assert query(store.path, "SELECT environment, key FROM idempotency_keys ORDER BY key") == [
            ("development", "k-1"), ("development", "k-2"),
        ]
    finally:
        await store.close()


async def test_keys_are_scoped_by_the_callers_environment(client):
    store = client.server.app[STORE]
    assert (await client.post(BULK, json=bulk_body("development", "scoped", yes=2), headers=keyed("k"))).status == 202
    assert (await client.post(BULK, json=bulk_body("production", "scoped", yes=4), headers=keyed("k", PROD_TOKEN))).status == 202
    assert await yes_of(store, "scoped") == {"development": 2, "production": 4}


async def test_a_key_is_forgotten_after_the_window_and_pruned(make_client, clock):
    client = await make_client(idempotency_window=600.0)
    store = client.server.app[STORE]
    assert (await client.post(BULK, json=bulk_body("development", "windowed", yes=1), headers=keyed("old"))).status == 202
    clock.advance(599)
    assert (await client.post(BULK, json=bulk_body("development", "windowed", yes=1), headers=keyed("old"))).status == 202
    assert await yes_of(store, "windowed") == {"development": 1}
    clock.advance(2)  # 601 s after the first post: a new batch that reuses the key
    assert (await client.post(BULK, json=bulk_body("development", "windowed", yes=1), headers=keyed("old"))).status == 202
    assert await yes_of(store, "windowed") == {"development": 2}

    assert store.prune_idempotency_keys(clock.now()) == 0  # re-recorded just now
    clock.advance(601)
    assert store.prune_idempotency_keys(clock.now()) == 1
    assert query(store.path, "SELECT count(*) FROM idempotency_keys") == [(0,)]


async def test_an_unusable_key_is_a_400_naming_the_header(client):
    store = client.server.app[STORE]
    for key in (" ", "k" * 256):
        resp = await client.post(BULK, json=bulk_body("development", "bad-key", yes=1), headers=keyed(key))
        assert resp.status == 400
        body = await resp.json()
        assert body["name"] == "BadDataError"
        assert body["details"][0]["path"] == "Idempotency-Key"
    assert await yes_of(store, "bad-key") == {}


async def test_a_refused_post_does_not_record_its_key(make_client, clock):
    client = await make_client(max_db_size=128 * 1024)
    hour = clock.now() // HOUR * HOUR
    for n in range(1000):  # fill the store
        body = metrics_body(hour, [f"filler-{n}-{j}" for j in range(20)], yes=1)
        if (await client.post("/api/client/metrics", json=body, headers=client_headers())).status == 503:
            break
    resp = await client.post(BULK, json=bulk_body("development", "retried", yes=9), headers=keyed("retry-me"))
    assert resp.status == 503
    db_path = client.server.app[STORE].path
    await client.close()

    client = await make_client(max_db_size=8 * 1024 * 1024)
    for _ in range(2):
        resp = await client.post(BULK, json=bulk_body("development", "retried", yes=9), headers=keyed("retry-me"))
        assert resp.status == 202
    assert await yes_of(client.server.app[STORE], "retried") == {"development": 9}
    assert query(db_path, "SELECT key FROM idempotency_keys") == [("retry-me",)]


def post_bulk(proxy: ProxyProcess, key: str, yes: int) -> int:
    request = urllib.request.Request(
        proxy.url + BULK, data=json.dumps(bulk_body("development", "crash", yes=yes)).encode(),
        headers=keyed(key), method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status


def test_a_key_is_remembered_across_a_kill_and_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    # A long fold interval: at the kill, the counts and the key are still only in the journal commit.
    proxy = ProxyProcess(data_dir, extra_env={"METRICS_PROXY_FOLD_INTERVAL": "3600"}).start()
    try:
        assert post_bulk(proxy, "before-crash", 4) == 202
        proxy.kill()
        proxy.start()
        assert post_bulk(proxy, "before-crash", 4) == 202  # the sender's retry after the crash
        assert post_bulk(proxy, "after-crash", 6) == 202
        assert proxy.terminate() == 0
    finally:
        proxy.stop()
    db_path = data_dir / "metrics-proxy.db"
    assert query(db_path, "SELECT sum(yes) FROM hourly_counts WHERE feature_name = 'crash'") == [(10,)]
    assert sorted(query(db_path, "SELECT key FROM idempotency_keys")) == [("after-crash",), ("before-crash",)]


async def test_rows_of_another_environment_are_counted_as_refused_once_per_batch(client):
    body = bulk_body("development", "mixed", yes=1)
    body["metrics"].append({"featureName": "mixed", "appName": "edge-app", "environment": "production", "yes": 5})
    for _ in range(2):
        assert (await client.post(BULK, json=body, headers=keyed("mixed-batch"))).status == 202
    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert prometheus_value(text, "metrics_proxy_dropped_rows_total", 'reason="environment_mismatch"') == 1
    assert await yes_of(client.server.app[STORE], "mixed") == {"development": 1}
