"""A bounded store keeps taking ingest for as long as it runs (issue 17, defects 4 and 5).

- With an upstream and overflow_policy "refuse": once everything is delivered, read history must
  give way to new ingest (the older half of its hours at a time, counted). Before, a store full of
  delivered history refused ingest until the 48 h retention caught up.
- Standalone (no upstream): pending counts that nothing would ever send or remove filled a bounded
  store until it refused ingest for good. Now they are kept as long as the history (an upstream
  configured later sends what is still there), pruned and given way with it.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from proxy.api.state import STORE
from proxy.storage.usage.retention import RetentionPolicy
from tests.storage_support import HOUR, metrics_body, prometheus_value, query
from tests.support import client_headers

STORE_BYTES = 1024 * 1024
FLAGS_PER_POST = 20


def flags_of(hour_no: int, post_no: int) -> list[str]:
    return [f"h{hour_no:02d}-p{post_no:03d}-f{n:02d}" for n in range(FLAGS_PER_POST)]


async def post_hour(client, hour_no: int, hour: float, posts: int, acked: Counter, flush=None) -> tuple[int, int]:
    """Up to `posts` posts of new flags in `hour` (with `flush`, delivered every other post); a 503
    is retried once the store had a moment to make room (the pruner wakes on a refusal). Returns
    (posts acknowledged, posts refused)."""
    ok = refused = 0
    for n in range(posts):
        if flush is not None and n % 2 == 0:
            assert await flush() == 0
        flags = flags_of(hour_no, n)
        for _ in range(20):
            resp = await client.post("/api/client/metrics", json=metrics_body(hour, flags, yes=1), headers=client_headers())
            if resp.status == 202:
                acked.update({flag: 2 for flag in flags})
                ok += 1
                break
            assert resp.status == 503, await resp.text()
            refused += 1
            await asyncio.sleep(0.05)
        else:
            return ok, refused
    return ok, refused


async def test_delivered_history_gives_way_to_new_ingest_in_a_full_store(forwarding_client, stub, clock):
    client = await forwarding_client({"max_db_size": STORE_BYTES})
    store = client.server.app[STORE]
    acked: Counter = Counter()
    start = clock.now() // HOUR * HOUR
    per_hour = []
    for hour_no in range(14):  # a few hours of history fill the store; new ones must take their room
        clock.set(start + hour_no * HOUR + 60)
        per_hour.append(await post_hour(client, hour_no, clock.now() // HOUR * HOUR, 10, acked,
                                        client.forwarder.flush))
        assert await client.forwarder.flush() == 0  # delivered: nothing in the history is still owed
    assert all(ok == 10 for ok, _refused in per_hour), per_hour  # every post acknowledged in the end
    assert sum(refused for _ok, refused in per_hour) > 0, per_hour  # the store did fill up

    delivered: Counter = Counter()
    for (_env, _app, flag, _ts, _answer), count in stub.delivered_totals().items():
        delivered[flag] += count
    assert delivered == acked  # exactly once, what gave way had been delivered before
    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert prometheus_value(text, "metrics_proxy_pruned_rows_total", 'reason="space",table="hourly_counts"') > 0
    # The newest hour is still readable; the oldest gave way.
    hours = [h for (h,) in query(store.path, "SELECT DISTINCT hour FROM hourly_counts ORDER BY hour")]
    assert hours[-1] == start + 13 * HOUR and hours[0] > start


async def test_standalone_store_prunes_its_outbox_with_the_history_and_keeps_taking_ingest(make_client, clock):
    client = await make_client(max_db_size=STORE_BYTES)
    store = client.server.app[STORE]
    # Rows an earlier configuration with an upstream left behind: nothing will ever send them.
    start = clock.now() // HOUR * HOUR
    store.db.execute("INSERT INTO pending_counts VALUES ('development', 'old-app', 'old-flag', ?, 5, 1, NULL)",
                     (start,))
    acked: Counter = Counter()
    for cycle in range(5):  # fill, let retention pass, fill again: the old code refused for good by the third
        clock.set(start + cycle * 3 * HOUR + 60)
        ok, _refused = await post_hour(client, cycle, clock.now() // HOUR * HOUR, 60, acked)
        assert ok == 60, f"cycle {cycle}: {ok} of 60 posts acknowledged"
        assert await store.fold_in_chunks()
        # Retention passes: this cycle's hour is older than the 2 hours kept.
        await store.prune(RetentionPolicy(hourly_hours=2, forwarding=False), clock.now() + 3 * HOUR)
    assert query(store.path, "SELECT count(*) FROM pending_counts") == [(0,)]
