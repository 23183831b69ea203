"""A store that is full (policy "refuse") still drains: the forwarder's cut may use the reserve
above the ingest high-water mark (in smaller cuts when a large one does not fit), and every
acknowledged count reaches the upstream exactly."""

from __future__ import annotations

from collections import Counter

from tests.storage_support import HOUR
from tests.test_disk_full import fill_until_refused


async def test_a_full_store_forwards_every_acknowledged_count(forwarding_client, stub, clock):
    # Small enough to fill in a moment, large enough that the schema's ~40 pages leave room to work.
    client = await forwarding_client({"max_db_size": 320 * 1024})
    hour = clock.now() // HOUR * HOUR
    acked, refused, _ = await fill_until_refused(client, hour)
    assert acked and refused

    assert await client.forwarder.flush() == 0
    delivered: Counter = Counter()
    for (_env, _app, flag, _ts, _answer), count in stub.delivered_totals().items():
        delivered[flag] += count
    assert dict(delivered) == acked  # exactly the acknowledged counts, none of the refused ones
