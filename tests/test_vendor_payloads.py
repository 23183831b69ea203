"""Vendor payloads (LaunchDarkly's SDK events) in storage: committed with their request, stored
once, whichever process took the request; a crash after the 202 loses none and doubles none."""

from __future__ import annotations

from proxy.storage import CountRow, JournalEntry, Store, payloads
from proxy.storage.journal import VendorPayload
from tests.test_shards import HOUR, crash, primary_and_shard


def entry(n: int) -> JournalEntry:
    return JournalEntry("production", HOUR + 10, [CountRow("launchdarkly:production", "f", HOUR, 1, 0)],
                        payloads=[VendorPayload("v", "production:server", b"{}", f"[{n}]".encode())])


def bodies(store: Store) -> list[bytes]:
    return [body for _, _, _, body in store.on_writer(payloads.oldest, "v", 100)]


async def test_the_primary_stores_a_payload_in_its_commit_and_a_crash_keeps_it_once(tmp_path):
    store = Store(tmp_path / "metrics-proxy.db")
    await store.open()
    for n in range(3):
        assert await store.append([entry(n)])
    assert bodies(store) == [b"[0]", b"[1]", b"[2]"]  # at once, before any fold
    crash(store)  # the journal rows are replayed at the next start; the payloads are not again
    store = Store(tmp_path / "metrics-proxy.db")
    await store.open()
    assert bodies(store) == [b"[0]", b"[1]", b"[2]"]
    assert store.db.execute("SELECT sum(yes) FROM hourly_counts").fetchone()[0] == 3
    await store.close()


async def test_a_workers_payload_travels_in_its_journal_and_the_fold_stores_it_once(tmp_path):
    _, store, shard = await primary_and_shard(tmp_path)
    for n in range(3):
        assert await shard.append([entry(n)])
    assert bodies(store) == []  # only in the worker's journal so far
    assert store.fold()
    assert store.fold()  # a second fold finds nothing new
    assert bodies(store) == [b"[0]", b"[1]", b"[2]"]
    await shard.close()
    await store.close()
