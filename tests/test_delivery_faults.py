"""Faults of the delivery mechanism under splits, storage errors and a full store (issue 17),
each against the real store file and a scripted upstream over loopback HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter

import pytest
from aiohttp import web

from proxy.api.state import STORE
from proxy.forwarding.delivery import new_batch_id
from proxy.storage import Store
from proxy.storage.capacity.limits import PageBudget
from proxy.storage.outbox import BatchGone, Outbox, OutboxItem, insert_batch
from proxy.unleash.store.pending import PendingRow
from proxy.unleash.store.status import status_report
from proxy.unleash.upstream.payload import metric_item
from tests.forwarding import UPSTREAM_PROD, post_metrics
from tests.storage_support import HOUR, metrics_body
from tests.support import client_headers
from tests.test_disk_full import fill_until_refused

ENV = "development"


def item(flag: str, yes: int, hour: int) -> OutboxItem:
    return metric_item(ENV, PendingRow("app-a", flag, hour, yes, 0, None))


def flags_of(rec) -> tuple[str, ...]:
    return tuple(m["featureName"] for m in rec.body["metrics"])


def delivered_yes(stub) -> Counter:
    """Yes counts per flag over the bodies the stub answered 2xx."""
    totals: Counter = Counter()
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            totals[m["featureName"]] += m["yes"]
    return totals


def put_batches(client, *batches: list[str]) -> dict[str, int]:
    """Batches of the given flags in the outbox, in this order, as a cut would leave them; each
    flag's yes count is its number (from 1). Returns those counts."""
    store = client.server.app[STORE]
    created = client.forwarder.clock.now()
    expected: dict[str, int] = {}
    for flags in batches:
        items = [item(flag, len(expected) + n, int(created // 3600 * 3600)) for n, flag in enumerate(flags, start=1)]
        expected |= {flag: i.yes for flag, i in zip(flags, items)}
        store.write(insert_batch, ENV, created, items, new_batch_id())
    return expected


async def test_a_split_child_taking_a_finished_parents_seq_is_not_sent_twice(forwarding_client, stub):
    """outbox_batches.seq is reused once the highest row is deleted. This schedule makes a batch
    of one subtree (Q's first half) take the seq of another subtree's root (P) while P's last leaf
    is still in flight: when P's subtree ends, P's seq must not release Q's half, which its own
    sender is still sending (held at the upstream) and would otherwise be sent and split again,
    its items delivered twice under new Idempotency-Keys.

    The seqs: Q 1, X 2, Y 3, P 4. X and Y are delivered; P splits into 2 and 3, and its second
    half (3) into 2 and 3; while that last leaf (3) is in flight Q splits into 4 and 5, so Q's
    first half holds 4, P's seq, until P's subtree ends."""
    client = await forwarding_client()  # the default max_in_flight (4): Q, X, Y and P at once
    fillers_done, leaf_sent, q_half_sent, q_half_again = (asyncio.Event() for _ in range(4))
    fillers: set[tuple[str, ...]] = set()

    async def answer(request, rec):
        flags = flags_of(rec)
        if flags in (("x",), ("y",)):
            fillers.add(flags)
            if len(fillers) == 2:
                fillers_done.set()
            return web.Response(status=202)
        if flags == ("p-0", "p-1", "p-2"):
            await fillers_done.wait()  # X and Y gone: P's halves take low seqs
        elif flags == ("p-2",):  # P's last leaf, the highest row once Q splits
            leaf_sent.set()
            await q_half_sent.wait()
        elif flags == ("q-0", "q-1", "q-2", "q-3"):
            await leaf_sent.wait()  # Q's halves take the seqs just above P's leaf: P's own seq first
        elif flags == ("q-0", "q-1"):
            if q_half_sent.is_set():
                q_half_again.set()
            else:
                q_half_sent.set()
                # Held until a second sender shows up (today's code) or long enough to tell.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(q_half_again.wait(), 1.0)
        return web.Response(status=202 if len(flags) == 1 else 413)

    stub.default = answer
    expected = put_batches(client, ["q-0", "q-1", "q-2", "q-3"], ["x"], ["y"], ["p-0", "p-1", "p-2"])

    assert await client.forwarder.flush() == 0

    assert stub.resent == []
    assert not q_half_again.is_set(), "Q's first half was sent by a second sender"
    assert dict(delivered_yes(stub)) == expected
    assert client.stats.batches_split == 5  # P, P's second half, Q and Q's halves: once each


async def test_outbox_changes_of_a_batch_no_longer_there_touch_no_other_batch(tmp_path):
    """A Batch read before its row was deleted must not act on the row that took its seq since (an
    INTEGER PRIMARY KEY without AUTOINCREMENT hands the highest seq out again): delivering,
    splitting, dead-lettering or counting an attempt of it changes nothing and says so."""
    store = Store(tmp_path / "outbox.db")
    await store.open()
    try:
        outbox = Outbox(store)
        store.write(insert_batch, ENV, 1.0, [item("a-0", 1, 0), item("a-1", 2, 0)], "batch-a")
        [gone] = outbox.oldest_batches(ENV, set(), 1)
        outbox.delivered(gone, 2.0)
        store.write(insert_batch, ENV, 1.0, [item("b-0", 3, 0)], "batch-b")
        [kept] = outbox.oldest_batches(ENV, set(), 1)
        assert kept.seq == gone.seq  # the seq was handed out again

        for change in (
            lambda: outbox.delivered(gone, 3.0),
            lambda: outbox.split(gone, [gone.items[:1], gone.items[1:]], new_batch_id),
            lambda: outbox.dead_letter(gone, 413, "too large", 3.0),
            lambda: outbox.record_attempt(gone, "HTTP 503"),
        ):
            with pytest.raises(BatchGone):
                change()

        [still] = outbox.oldest_batches(ENV, set(), 5)
        assert (still.id, still.attempts, [i.item for i in still.items]) == ("batch-b", 0, [kept.items[0].item])
        assert store.db.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
        assert store.db.execute("SELECT count(*) FROM outbox_items").fetchone() == (1,)
    finally:
        await store.close()


async def test_a_backlog_cut_during_an_outage_and_split_to_single_items_is_delivered_exactly_once(
    forwarding_client, stub, clock, caplog,
):
    """The fault campaign's workload: 2,000 flags cut into batches while the upstream answers 500,
    then a 413 for every body of more than one item, with the default max_in_flight. Every flag
    arrives once, under one Idempotency-Key, and no outbox change misses its batch."""
    client = await forwarding_client(max_body_bytes=4096)  # ~20 items a batch: many splits at once
    outage = True

    async def answer(request, rec):
        if outage:
            return web.Response(status=500)
        return web.Response(status=202 if len(rec.body["metrics"]) + len(rec.body["applications"]) == 1 else 413)

    stub.default = answer
    flags = {f"flag-{n:04d}": (n + 1, 0) for n in range(2000)}
    names = list(flags)
    for start in range(0, len(names), 250):
        await post_metrics(client, {name: flags[name] for name in names[start:start + 250]}, clock.now())
        await client.forwarder.tick()
        await asyncio.sleep(0.02)
    outage = False

    assert await client.forwarder.flush() == 0

    assert stub.resent == []
    assert dict(delivered_yes(stub)) == {name: yes for name, (yes, _no) in flags.items()}
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "failed" in r.getMessage()]


async def test_a_split_child_is_sent_on_the_next_tick_after_a_sibling_failed(forwarding_client, stub):
    """A 413 splits a batch; recording its first half's delivery fails (another process holds the
    database's write lock: an operator's `flush --one-shot` or sqlite3 shell on the live file).
    The second half was never sent, and must not stay marked as being sent: the next tick sends
    both (the first again under its own key)."""
    client = await forwarding_client()
    store = client.server.app[STORE]
    store.db.execute("PRAGMA busy_timeout = 100")  # give up on the lock quickly, not after 5 s
    other = sqlite3.connect(store.path, isolation_level=None)

    async def answer(request, rec):
        flags = flags_of(rec)
        if len(stub.received) == 2:  # the first half, the first time
            other.execute("BEGIN IMMEDIATE")  # the write lock, until the test lets go
        return web.Response(status=202 if len(flags) <= 2 else 413)

    stub.default = answer
    expected = put_batches(client, ["p-0", "p-1", "p-2", "p-3"])

    try:
        assert await client.forwarder.flush() == 2  # the halves: one answered, one never sent
        assert [flags_of(r) for r in stub.received] == [("p-0", "p-1", "p-2", "p-3"), ("p-0", "p-1")]
    finally:
        other.execute("ROLLBACK")
        other.close()

    for _tick in range(3):
        if await client.forwarder.flush() == 0:
            break
    assert client.forwarder.outbox.pending_batch_count() == 0
    assert dict(delivered_yes(stub)) | {"p-0": 1, "p-1": 2} == expected
    assert sorted(f for r in stub.delivered() for f in flags_of(r)) == ["p-0", "p-0", "p-1", "p-1", "p-2", "p-3"]
    assert stub.resent == []  # the first half went twice, under the same Idempotency-Key


async def test_a_full_store_splits_dead_letters_and_backs_off_until_it_has_drained(forwarding_client, stub, clock,
                                                                                    caplog):
    """A store filled to max_db_size, whose cut then filled the reserve above the ingest
    high-water mark to the last page: no split, dead letter or recorded attempt could be written
    ('database or disk is full'), so a 413 or 400 could never be settled, nothing was delivered
    and ingest stayed refused. The cut now leaves part of the reserve to the outbox changes,
    which may all use it: the store drains, 500s are retried with backoff, ingest comes back."""
    client = await forwarding_client({"max_db_size": 1024 * 1024}, max_body_bytes=8192)
    hour = clock.now() // HOUR * HOUR
    acked, refused, _ = await fill_until_refused(client, hour, flags_per_post=50)
    assert acked and refused
    bad = {flag for flag in acked if flag.endswith("-007")}  # one flag of every post
    assert bad
    caplog.clear()  # of the refused posts' errors
    outages = 4

    async def answer(request, rec):
        nonlocal outages
        if outages:
            outages -= 1
            return web.Response(status=500, text="upstream trouble; " * 20)  # a long last_error
        if len(rec.body["metrics"]) + len(rec.body["applications"]) > 1:
            return web.Response(status=413)
        return web.Response(status=400 if set(flags_of(rec)) & bad else 202)

    stub.default = answer

    for _tick in range(5):  # a few ticks at most: a cut the full store refused goes on after sends
        if await client.forwarder.flush() == 0:
            break
    assert client.forwarder.outbox.pending_batch_count() == 0
    assert not [r.getMessage() for r in caplog.records if r.levelname == "ERROR" and "failed" in r.getMessage()]

    delivered = delivered_yes(stub)
    delivered.update({m["featureName"]: m["no"] for r in stub.delivered() for m in r.body["metrics"]})
    assert dict(delivered) == {flag: n for flag, n in acked.items() if flag not in bad}
    assert stub.resent == []
    store = client.server.app[STORE]
    dead = store.db.execute("SELECT item, status FROM dead_letters").fetchall()
    assert sorted(json.loads(i)["featureName"] for i, _ in dead) == sorted(bad)
    assert {status for _, status in dead} == {400}
    # Each 500 was retried with backoff within its batch's send, under the batch's own key.
    assert client.stats.retries == client.stats.requests["500"] == 4
    refused_keys = [r.key for r in stub.received if r.status == 500]
    assert all(key in {r.key for r in stub.received if r.status != 500} for key in refused_keys)

    response = await client.post("/api/client/metrics", json=metrics_body(hour, ["after-0"], yes=1),
                                 headers=client_headers())
    assert response.status == 202
    assert await client.forwarder.flush() == 0
    assert delivered_yes(stub)["after-0"] == 1


async def test_a_store_already_deep_in_its_reserve_with_nothing_cut_still_drains(forwarding_client, stub, clock):
    """The cut keeps part of the reserve for settling batches, but when folds have already filled
    more than its share and no batch waits (so no delivery will free room), it takes the whole
    reserve: otherwise the pending counts would never leave a full store. Made here by reopening
    a filled store under a max_db_size whose reserve it is three-quarters into."""
    client = await forwarding_client({"max_db_size": 1024 * 1024}, tokens={"production": UPSTREAM_PROD})
    hour = clock.now() // HOUR * HOUR
    acked, _refused, _ = await fill_until_refused(client, hour, flags_per_post=50)  # development: not cut
    store = client.server.app[STORE]
    store.fold()
    used = store.pragma("page_count") - store.pragma("freelist_count")
    page_size = store.pragma("page_size")
    await client.close()

    def reserve_used(max_bytes: int) -> float:
        budget = PageBudget.for_size(max_bytes, page_size)
        return (used - budget.high_water_pages) / (budget.hard_pages - budget.high_water_pages)

    smaller = next(size for size in range(1024 * 1024, 0, -page_size) if reserve_used(size) >= 0.75)
    assert reserve_used(smaller) < 0.85
    client = await forwarding_client({"max_db_size": smaller})
    assert client.server.app[STORE].refusing_ingest()

    for _tick in range(5):  # a cut the full store refused goes on once its batches were sent
        await client.forwarder.flush()
    delivered: Counter = Counter()
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            delivered[m["featureName"]] += m["yes"] + m["no"]
    assert dict(delivered) == acked
    assert not client.server.app[STORE].refusing_ingest()


async def test_a_500_is_retried_with_backoff_even_when_its_attempt_cannot_be_recorded(forwarding_client, stub,
                                                                                        caplog):
    """Counting an attempt is bookkeeping: when it cannot be written (here another process holds
    the write lock) the batch is still retried after a backoff under its key, not dropped from the
    send and resent on the next tick without one."""
    client = await forwarding_client()
    store = client.server.app[STORE]
    store.db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(store.path, isolation_level=None)

    async def locked_500(request, rec):
        other.execute("BEGIN IMMEDIATE")
        return web.Response(status=500)

    async def unlocked_202(request, rec):
        other.execute("ROLLBACK")
        return web.Response(status=202)

    stub.script = [locked_500, unlocked_202]
    expected = put_batches(client, ["a-0", "a-1"])
    try:
        assert await client.forwarder.flush() == 0
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()

    assert [r.status for r in stub.received] == [500, 202] and len({r.key for r in stub.received}) == 1
    assert client.stats.retries == 1
    assert dict(delivered_yes(stub)) == expected
    assert any("could not record a failed attempt" in r.getMessage() for r in caplog.records)


async def test_a_refused_environment_pauses_even_when_the_pause_cannot_be_recorded(forwarding_client, stub, clock):
    """A 401 pauses the environment in memory whatever happens to writing the reason down for the
    status report (here another process holds the write lock); the reason is written at the next
    refusal."""
    client = await forwarding_client(auth_retry_interval=300.0)
    store = client.server.app[STORE]
    store.db.execute("PRAGMA busy_timeout = 100")
    other = sqlite3.connect(store.path, isolation_level=None)

    async def locked_401(request, rec):
        other.execute("BEGIN IMMEDIATE")
        return web.Response(status=401, text="token revoked")

    stub.script = [locked_401]
    stub.default = 401
    put_batches(client, ["a-0"])
    try:
        assert await client.forwarder.flush() == 1
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert client.stats.paused_environments == {ENV}

    assert await client.forwarder.flush() == 1
    assert len(stub.received) == 1  # paused: not tried again before auth_retry_interval
    clock.advance(300)
    assert await client.forwarder.flush() == 1
    assert len(stub.received) == 2
    assert status_report(store.db)["environments"][ENV]["paused"] is not None


async def test_the_halves_of_a_split_wait_while_their_environment_is_paused(forwarding_client, stub, clock):
    """A 413 splits a batch and its first half is refused (401): the environment pauses, and the
    second half waits for the pause to end like every other batch of it."""
    client = await forwarding_client(auth_retry_interval=300.0)
    refusing = True

    async def answer(request, rec):
        if len(rec.body["metrics"]) > 2:
            return web.Response(status=413)
        return web.Response(status=401 if refusing else 202)

    stub.default = answer
    expected = put_batches(client, ["a-0", "a-1", "a-2", "a-3"])

    assert await client.forwarder.flush() == 2
    assert [(len(r.body["metrics"]), r.status) for r in stub.received] == [(4, 413), (2, 401)]

    refusing = False
    clock.advance(300)
    assert await client.forwarder.flush() == 0
    assert dict(delivered_yes(stub)) == expected


async def test_a_2xx_ends_a_pause_a_concurrent_refusal_began(forwarding_client, stub, clock):
    """Two batches in flight: one is refused (401) and pauses the environment, then the other is
    accepted. The accepted one clears the recorded pause; the environment is no longer paused in
    memory either, so the status report, the metrics and the drain agree."""
    client = await forwarding_client(auth_retry_interval=300.0)
    refused = asyncio.Event()

    async def answer(request, rec):
        if flags_of(rec) == ("a-0",) and not refused.is_set():
            refused.set()
            return web.Response(status=401)
        await refused.wait()
        await asyncio.sleep(0.05)  # answered after the refusal was settled
        return web.Response(status=202)

    stub.default = answer
    expected = put_batches(client, ["a-0"], ["b-0"])

    await client.forwarder.flush()
    assert status_report(client.forwarder.outbox.db)["environments"][ENV]["paused"] is None
    assert client.stats.paused_environments == set()
    assert await client.forwarder.flush() == 0
    assert dict(delivered_yes(stub)) == expected
