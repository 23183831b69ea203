"""overflow_policy = "drop_oldest": a full store deletes its oldest hours to keep taking new
counts, and every undelivered count it deletes is counted (acknowledged = stored + dropped)."""

from __future__ import annotations

import sqlite3

from proxy.api.state import STORE
from proxy.storage.usage.retention import RetentionPolicy
from tests.storage_support import (
    HOUR,
    SMALL_STORE,
    UNREACHABLE_UPSTREAM,
    metrics_body,
    prometheus_value,
    query,
    quick_check,
)
from tests.support import client_headers

MINUTE_PRUNING = RetentionPolicy(hourly_hours=10_000, minute_minutes=60, instance_hours=10_000)
# synchronous=NORMAL only to spare the fsyncs: durability is not what these tests measure.
FLAGS = [f"flag-{j:02d}" for j in range(20)]


async def post_hours(client, clock, first_hour: float, hours: range) -> dict[int, int]:
    """One post per hour with the same flags (an SDK while the upstream is down), each sent in its
    hour (the proxy takes buckets within 48 hours of its clock); every post must be acknowledged.
    Returns {hour: acknowledged yes+no}."""
    acked = {}
    store = client.server.app[STORE]
    for n in hours:
        hour = int(first_hour + n * HOUR)
        clock.set(hour + 1800)
        # The pruner's per-minute pass, as it runs every minute in service: the clock jumps an hour
        # per post here, so the per-minute counts of the hours before are no longer kept.
        await store.prune(MINUTE_PRUNING, clock.now())
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, FLAGS, yes=n + 1), headers=client_headers())
        assert resp.status == 202, await resp.text()
        acked[hour] = len(FLAGS) * (n + 2)
    return acked


def pending_by_hour(db_path) -> dict[int, int]:
    return dict(query(db_path, "SELECT hour, sum(yes + no) FROM pending_counts GROUP BY hour"))


async def dropped_metric(client) -> float | None:
    text = await (await client.get("/internal-backstage/prometheus")).text()
    return prometheus_value(text, "metrics_proxy_dropped_counts_total", 'reason="overflow_drop_oldest"')


async def test_oldest_hours_are_dropped_first_and_every_dropped_count_is_counted(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE, overflow_policy="drop_oldest", synchronous="NORMAL")
    store = client.server.app[STORE]
    first_hour = clock.now() // HOUR * HOUR - 150 * HOUR
    acked = await post_hours(client, clock, first_hour, range(150))
    assert store.fold()

    pending = pending_by_hour(store.path)
    dropped_hours = sorted(set(acked) - set(pending))
    assert dropped_hours and pending, "the store should have had to drop some hours, not all"
    assert max(dropped_hours) < min(pending)  # oldest first
    assert pending == {hour: acked[hour] for hour in pending}  # kept hours are whole
    dropped = sum(acked[hour] for hour in dropped_hours)
    assert store.space.dropped_counts["overflow_drop_oldest"] == dropped
    assert sum(acked.values()) == sum(pending.values()) + dropped
    assert await dropped_metric(client) == dropped
    # The history of a dropped hour goes with it; that is what makes room for the next fold.
    assert {h for (h,) in query(store.path, "SELECT DISTINCT hour FROM hourly_counts")} == set(pending)
    assert store.pragma("page_count") * store.pragma("page_size") <= SMALL_STORE
    assert quick_check(store.path) == "ok"


async def test_delivered_history_is_dropped_before_undelivered_counts(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE, overflow_policy="drop_oldest", synchronous="NORMAL")
    store = client.server.app[STORE]
    first_hour = clock.now() // HOUR * HOUR - 150 * HOUR
    delivered = await post_hours(client, clock, first_hour, range(0, 20))
    assert store.fold()
    # Stand-in for the forwarder: these hours were sent upstream and left the outbox.
    with sqlite3.connect(store.path) as forwarder:
        forwarder.execute("DELETE FROM pending_counts")
    forwarder.close()
    assert await dropped_metric(client) is None  # nothing dropped yet

    undelivered = await post_hours(client, clock, first_hour, range(20, 150))
    assert store.fold()
    pending = pending_by_hour(store.path)
    history = {h for (h,) in query(store.path, "SELECT DISTINCT hour FROM hourly_counts")}
    assert not history & set(delivered)  # the delivered history went first ...
    dropped_hours = set(undelivered) - set(pending)
    assert dropped_hours and max(dropped_hours) < min(pending)
    # ... and cost no undelivered count: only what left the outbox is counted as dropped.
    dropped = sum(undelivered[h] for h in dropped_hours)
    assert store.space.dropped_counts["overflow_drop_oldest"] == dropped
    assert sum(undelivered.values()) == sum(pending.values()) + dropped
    assert quick_check(store.path) == "ok"


async def test_refuse_policy_never_drops(make_client, clock):
    client = await make_client(upstream=UNREACHABLE_UPSTREAM, max_db_size=SMALL_STORE)
    store = client.server.app[STORE]
    first_hour = clock.now() // HOUR * HOUR - 150 * HOUR
    acked, statuses = {}, []
    for n in range(150):
        hour = int(first_hour + n * HOUR)
        resp = await client.post("/api/client/metrics", json=metrics_body(hour, FLAGS, yes=n + 1), headers=client_headers())
        statuses.append(resp.status)
        if resp.status == 202:
            acked[hour] = len(FLAGS) * (n + 2)
    assert 503 in statuses
    assert store.fold()
    assert pending_by_hour(store.path) == acked
    assert not store.space.dropped_counts
