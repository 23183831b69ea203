"""50,000 distinct keys through the real ingest path: bodies stay under the limit, totals exact."""

from __future__ import annotations

import os
from collections import Counter

from tests.forwarding import post_metrics

# FORWARDER_VOLUME_KEYS raises or lowers it; the default is the full requirement.
KEYS = int(os.environ.get("FORWARDER_VOLUME_KEYS", "50000"))
PER_REQUEST = 1000
MAX_BODY = 95 * 1024


async def test_many_distinct_keys_arrive_exactly_in_bodies_under_the_limit(forwarding_client, stub, clock):
    client = await forwarding_client(max_body_bytes=MAX_BODY)
    ingested: Counter = Counter()
    for start in range(0, KEYS, PER_REQUEST):
        app = f"app-{start // 10_000}"
        toggles = {f"feature.{n:06d}": (n % 7 + 1, n % 3) for n in range(start, min(start + PER_REQUEST, KEYS))}
        hours_ago = (start // PER_REQUEST) % 3  # spread over three hours
        await post_metrics(client, toggles, clock.now() - hours_ago * 3600, app=app, instance=f"i-{start}")
        for name, (yes, no) in toggles.items():
            ingested[(app, name, "yes")] += yes
            ingested[(app, name, "no")] += no

    assert await client.forwarder.flush() == 0

    assert all(rec.size <= MAX_BODY for rec in stub.received)
    assert len(stub.received) > 1
    delivered: Counter = Counter()
    for rec in stub.delivered():
        for m in rec.body["metrics"]:
            delivered[(m["appName"], m["featureName"], "yes")] += m["yes"]
            delivered[(m["appName"], m["featureName"], "no")] += m["no"]
    assert +delivered == +ingested
    keys = {(m["appName"], m["featureName"], m["timestamp"]) for r in stub.received for m in r.body["metrics"]}
    assert len(keys) == KEYS
