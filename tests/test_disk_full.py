"""A full store (max_db_size, policy "refuse"): 503 + Retry-After, never a 202 for data not
stored, no partial rows, every acknowledged count kept, and ingest resumes when space returns."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

from proxy.api.state import STORE
from tests.storage_support import (
    HOUR,
    SMALL_STORE,
    UNREACHABLE_UPSTREAM,
    metrics_body,
    prometheus_value,
    query,
    quick_check,
)
from tests.support import ProxyProcess, client_headers

FLAGS_PER_POST = 20


def flags_of(request_no: int, count: int = FLAGS_PER_POST) -> list[str]:
    # Every request its own flag names: whether any row of a refused request was stored is visible.
    return [f"r{request_no:04d}-flag-{j:03d}" for j in range(count)]


async def fill_until_refused(client, hour: float, start: int = 0, flags_per_post: int = FLAGS_PER_POST):
    """Post until 10 posts in a row are refused; returns ({flag: acknowledged yes+no}, refused flags,
    number of 503s). Every 503 must carry Retry-After and the JSON error body."""
    acked: dict[str, int] = {}
    refused: set[str] = set()
    in_a_row = failures = 0
    for n in range(start, start + 2000):
        flags = flags_of(n, flags_per_post)
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags, yes=n + 1), headers=client_headers())
        if resp.status == 202:
            acked.update({flag: n + 2 for flag in flags})
            in_a_row = 0
            continue
        assert resp.status == 503, await resp.text()
        assert int(resp.headers["Retry-After"]) > 0
        body = await resp.json()
        assert body["name"] == "ServiceUnavailableError"
        assert "full" in body["message"] and body["details"][0]["message"] == body["message"]
        refused.update(flags)
        failures += 1
        in_a_row += 1
        if in_a_row == 10:
            return acked, refused, failures
    raise AssertionError("the store never filled up")


def stored_flags(db_path, table: str = "hourly_counts") -> dict[str, int]:
    """Acknowledged counts that reached `table` (the hourly history holds them with or without an
    upstream; pending_counts, the outbox, only with one)."""
    return dict(query(db_path, f"SELECT feature_name, sum(yes + no) FROM {table} GROUP BY feature_name"))


async def test_full_store_answers_503_and_keeps_exactly_the_acknowledged_counts(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE)
    store = client.server.app[STORE]
    hour = clock.now() // HOUR * HOUR
    acked, refused, failures = await fill_until_refused(client, hour)
    assert acked and refused

    assert store.fold()
    db_path = store.path
    # Exactly the acknowledged counts, and not one row of a refused request (no partial commit).
    assert stored_flags(db_path) == acked
    assert dict(query(db_path, "SELECT feature_name, sum(yes + no) FROM hourly_counts GROUP BY 1")) == acked
    assert query(db_path, "SELECT count(*) FROM journal") == [(0,)]
    assert quick_check(db_path) == "ok"
    page_size, pages = store.pragma("page_size"), store.pragma("page_count")
    assert page_size * pages <= SMALL_STORE

    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert prometheus_value(text, "metrics_proxy_db_limit_bytes") == SMALL_STORE
    assert 0 < prometheus_value(text, "metrics_proxy_db_used_bytes") <= SMALL_STORE
    assert prometheus_value(text, "metrics_proxy_sqlite_commit_failures_total") == failures
    assert prometheus_value(text, "metrics_proxy_ingest_counts_total") == sum(acked.values())


SCHEMA_GROWTH = 2 * 4096


async def test_a_group_commit_sqlite_refuses_stores_none_of_its_requests_and_the_fold_waits_for_space(
    make_client, clock, caplog,
):
    """Concurrent large posts share group commits. Their counts need more pages than the reserve,
    so the fold cannot run; the next group gets SQLITE_FULL from SQLite itself in the middle of its
    inserts and is rolled back whole (503 for each request). After a restart with a larger limit
    the journal is folded: exactly the acknowledged counts, nothing of the refused requests."""
    # The first group must fit: room for the schema's own pages (two more since the LaunchDarkly
    # event tables) beside SMALL_STORE's.
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE + SCHEMA_GROWTH)
    hour = clock.now() // HOUR * HOUR
    acked: dict[str, int] = {}
    statuses = []
    for round_no in range(4):
        numbers = range(round_no * 8, round_no * 8 + 8)
        posts = [
            client.post("/api/client/metrics", json=metrics_body(hour, flags_of(n, 300), yes=n + 1), headers=client_headers())
            for n in numbers
        ]
        for n, resp in zip(numbers, await asyncio.gather(*posts)):
            statuses.append(resp.status)
            if resp.status == 202:
                acked.update({flag: n + 2 for flag in flags_of(n, 300)})
            else:
                assert resp.status == 503 and "Retry-After" in resp.headers
    assert 202 in statuses and 503 in statuses
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("requests failed: database or disk is full") for m in messages), messages
    assert any(m.startswith("fold of") and "will retry" in m for m in messages), messages
    db_path = client.server.app[STORE].path
    await client.close()
    assert query(db_path, "SELECT count(*) FROM pending_counts") == [(0,)]  # all still in the journal

    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=16 * SMALL_STORE)
    assert client.server.app[STORE].fold()
    assert stored_flags(db_path) == acked
    assert query(db_path, "SELECT count(*) FROM journal") == [(0,)]
    assert quick_check(db_path) == "ok"


async def test_ingest_resumes_after_the_limit_is_raised_and_the_proxy_restarted(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE)
    hour = clock.now() // HOUR * HOUR
    acked, refused, _ = await fill_until_refused(client, hour)
    db_path = client.server.app[STORE].path
    await client.close()

    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=4 * SMALL_STORE)
    retry = sorted(refused)[:FLAGS_PER_POST]  # an SDK resending the counts it kept after the 503
    resp = await client.post("/api/client/metrics", json=metrics_body(hour, retry, yes=7), headers=client_headers())
    assert resp.status == 202
    acked.update({flag: 8 for flag in retry})
    more, _, _ = await fill_until_refused(client, hour, start=5000)
    acked.update(more)
    assert client.server.app[STORE].fold()
    assert stored_flags(db_path) == acked
    assert quick_check(db_path) == "ok"


async def test_ingest_resumes_when_the_outbox_is_delivered(make_client, clock):
    """SDKs report the same flags every hour while the upstream is down: the outbox grows hour by
    hour until the store refuses; once the forwarder has delivered it, ingest resumes."""
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE)
    store = client.server.app[STORE]
    first_hour = clock.now() // HOUR * HOUR - 1000 * HOUR
    flags = [f"flag-{j:02d}" for j in range(FLAGS_PER_POST)]
    statuses = []
    for n in range(1000):
        clock.set(first_hour + n * HOUR + 1800)  # each hour's post sent in that hour
        resp = await client.post("/api/client/metrics", json=metrics_body(first_hour + n * HOUR, flags, yes=1), headers=client_headers())
        statuses.append(resp.status)
        if statuses[-5:] == [503] * 5:
            break
    assert statuses[-5:] == [503] * 5
    assert store.fold()
    # Stand-in for the forwarder acknowledging every pending batch (it deletes what was sent).
    with sqlite3.connect(store.path) as forwarder:
        forwarder.execute("DELETE FROM pending_counts")
    forwarder.close()

    now_hour = clock.now() // HOUR * HOUR
    resp = await client.post("/api/client/metrics", json=metrics_body(now_hour, ["after-delivery"], yes=3), headers=client_headers())
    assert resp.status == 202
    assert store.fold()
    assert stored_flags(store.path, "pending_counts") == {"after-delivery": 4}
    assert quick_check(store.path) == "ok"


def post_metrics(proxy, body: dict) -> int:
    request = urllib.request.Request(
        proxy.url + "/api/client/metrics", data=json.dumps(body).encode(), headers=client_headers(), method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        assert exc.headers["Retry-After"]
        return exc.code


def test_a_full_proxy_killed_and_restarted_comes_back_and_loses_nothing(tmp_path):
    data_dir = tmp_path / "data"
    small = {"METRICS_PROXY_MAX_DB_SIZE": str(SMALL_STORE), "METRICS_PROXY_FOLD_INTERVAL": "3600"}
    hour = time.time() // HOUR * HOUR
    acked: dict[str, int] = {}
    proxy = ProxyProcess(data_dir, extra_env=small).start()
    try:
        statuses = []
        for n in range(2000):
            status = post_metrics(proxy, metrics_body(hour, flags_of(n), yes=n + 1))
            statuses.append(status)
            if status == 202:
                acked.update({flag: n + 2 for flag in flags_of(n)})
            if statuses[-5:] == [503] * 5:
                break
        assert statuses[-5:] == [503] * 5 and set(statuses) == {202, 503}
        proxy.kill()
        proxy.start()  # the same limit: starts, answers health, keeps refusing (no crash loop)
        assert post_metrics(proxy, metrics_body(hour, ["while-full"], yes=1)) == 503
        assert proxy.terminate() == 0

        proxy = ProxyProcess(data_dir, port=proxy.port, extra_env={"METRICS_PROXY_MAX_DB_SIZE": str(8 * SMALL_STORE)}).start()
        assert post_metrics(proxy, metrics_body(hour, ["after-raise"], yes=1)) == 202
        acked["after-raise"] = 2
        assert proxy.terminate() == 0
    finally:
        proxy.stop()
    db_path = data_dir / "metrics-proxy.db"
    assert stored_flags(db_path) == acked
    assert quick_check(db_path) == "ok"


async def test_a_reader_pinning_an_old_snapshot_cannot_grow_the_wal_past_the_limit(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE)
    store = client.server.app[STORE]
    budget = store.space.limit.budget
    wal_path = Path(str(store.path) + "-wal")
    hour = clock.now() // HOUR * HOUR
    acked: dict[str, int] = {}
    for n in range(5):  # the log of the start-up checkpointed and cut back to its share
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags_of(n, 5), yes=1), headers=client_headers())
        assert resp.status == 202
        acked.update({flag: 2 for flag in flags_of(n, 5)})
    assert wal_path.stat().st_size <= budget.wal_pages * budget.page_size
    # A slow reader: its open read transaction keeps checkpoints from copying newer frames.
    reader = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM journal").fetchone()
    statuses, peak = [], 0
    for n in range(5, 500):
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags_of(n, 5), yes=1), headers=client_headers())
        statuses.append(resp.status)
        if resp.status == 202:
            acked.update({flag: 2 for flag in flags_of(n, 5)})
        peak = max(peak, store.path.stat().st_size + wal_path.stat().st_size)
        if statuses[-5:] == [503] * 5:
            break
    assert statuses[0] == 202 and statuses[-5:] == [503] * 5  # accepted until the log passed its share
    assert peak <= SMALL_STORE

    reader.close()  # the reader lets go: checkpoints catch up and ingest resumes
    for n in range(1000, 1010):
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags_of(n, 5), yes=1), headers=client_headers())
        assert resp.status == 202
        acked.update({flag: 2 for flag in flags_of(n, 5)})
    assert wal_path.stat().st_size <= budget.wal_pages * budget.page_size
    assert store.fold()
    assert stored_flags(store.path) == acked
    assert quick_check(store.path) == "ok"


async def test_ready_says_not_ready_while_a_full_store_refuses_ingest(make_client, clock):
    client = await make_client(max_db_size=SMALL_STORE)
    assert (await client.get("/internal-backstage/ready")).status == 200
    await fill_until_refused(client, clock.now() // HOUR * HOUR)
    resp = await client.get("/internal-backstage/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "NOT_READY" and "full" in body["error"]
