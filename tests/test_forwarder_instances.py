"""How often SDK instances are announced upstream (the `applications` of a bulk body)."""

from __future__ import annotations

from tests.forwarding import post_metrics


def announced(stub, n: int) -> list[str]:
    return sorted(a["instanceId"] for a in stub.received[n].body["applications"])


async def test_known_instances_are_reannounced_once_per_refresh_interval(forwarding_client, stub, clock):
    client = await forwarding_client(instance_refresh_interval=60.0)
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
    await client.forwarder.flush()
    assert announced(stub, 0) == ["i-1"]

    # i-1 keeps reporting every 10 s: its counts go out each time, its entry does not.
    for step in range(1, 5):
        clock.advance(10)
        await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
        if step == 2:  # a new instance is announced in the very next batch
            await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-2")
        await client.forwarder.flush()
        assert announced(stub, step) == (["i-2"] if step == 2 else [])
    assert len(stub.received) == 5

    clock.advance(20)  # 60 s after the first announcement: both are refreshed, once
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-2")
    await client.forwarder.flush()
    assert announced(stub, 5) == ["i-1", "i-2"]
    clock.advance(10)
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
    await client.forwarder.flush()
    assert announced(stub, 6) == []
    assert sum(m["yes"] for r in stub.delivered() for m in r.body["metrics"]) == 9  # every post, once


async def test_an_instance_that_stopped_reporting_is_not_refreshed(forwarding_client, stub, clock):
    client = await forwarding_client(instance_refresh_interval=60.0)
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="gone")
    await client.forwarder.flush()
    clock.advance(70)
    await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
    await client.forwarder.flush()
    assert announced(stub, 0) == ["gone", "i-1"] and announced(stub, 1) == ["i-1"]


async def test_zero_refresh_interval_announces_every_instance_seen_in_every_batch(forwarding_client, stub, clock):
    client = await forwarding_client(instance_refresh_interval=0.0)
    for step in range(3):
        await post_metrics(client, {"flag-a": (1, 0)}, clock.now(), instance="i-1")
        await client.forwarder.flush()
        assert announced(stub, step) == ["i-1"]
        clock.advance(10)
