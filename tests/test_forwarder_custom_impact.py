"""Custom metrics go to {upstream}/client/metrics/custom (latest value; a 404 is recorded once and
they stay local), and impact metrics travel inside the bulk batches (Unleash Edge drops those)."""

from __future__ import annotations

from tests.support import ADMIN_TOKEN, client_headers, epoch_ms


async def post_custom(client, name: str, value: float, **labels) -> None:
    body = {"metrics": [{"name": name, "value": value, "labels": labels}]}
    resp = await client.post("/api/client/metrics/custom", json=body, headers=client_headers())
    assert resp.status == 202, await resp.text()


async def test_custom_metrics_are_forwarded_with_their_latest_value(forwarding_client, stub):
    client = await forwarding_client()
    await post_custom(client, "checkout_total", 3, region="eu")
    await post_custom(client, "checkout_total", 2, region="eu")
    await client.forwarder.flush()
    assert stub.custom == [{"metrics": [{"name": "checkout_total", "value": 2.0, "labels": {"region": "eu"}}]}]
    await client.forwarder.flush()
    assert len(stub.custom) == 1
    await post_custom(client, "checkout_total", 5, region="eu")
    await client.forwarder.flush()
    assert stub.custom[-1]["metrics"][0]["value"] == 5.0


async def test_a_404_for_custom_metrics_is_recorded_once_and_they_stay_local(forwarding_client, stub, caplog):
    stub.custom_status = 404  # Unleash 8.1 removed the endpoint
    client = await forwarding_client()
    await post_custom(client, "queue_depth", 7)
    await client.forwarder.flush()
    await post_custom(client, "queue_depth", 8)
    await client.forwarder.flush()
    assert len(stub.custom) == 1  # not retried after the 404
    assert sum("custom metrics stay local only" in r.getMessage() for r in caplog.records) == 1
    text = await (await client.get("/internal-backstage/prometheus")).text()
    assert "\nqueue_depth 8\n" in text  # still served locally


async def test_a_failed_custom_send_is_retried_on_the_next_flush(forwarding_client, stub):
    stub.custom_status = 503
    client = await forwarding_client()
    await post_custom(client, "jobs", 1)
    await client.forwarder.flush()
    stub.custom_status = 202
    await client.forwarder.flush()
    assert [b["metrics"][0]["value"] for b in stub.custom] == [1.0, 1.0]
    await client.forwarder.flush()
    assert len(stub.custom) == 2


async def test_impact_metrics_are_forwarded_inside_bulk_batches(forwarding_client, stub, clock):
    client = await forwarding_client()
    counter = {"name": "signups", "help": "sign-ups", "type": "counter",
               "samples": [{"value": 2, "labels": {"plan": "pro"}}]}
    histogram = {"name": "latency", "help": "ms", "type": "histogram",
                 "samples": [{"count": 3, "sum": 12.5, "buckets": [{"le": 5, "count": 1}, {"le": "+Inf", "count": 3}]}]}
    for _ in range(2):
        body = {"appName": "web", "instanceId": "i-1", "impactMetrics": [counter, histogram],
                "bucket": {"start": epoch_ms(clock.now() - 1), "stop": epoch_ms(clock.now()),
                           "toggles": {"f": {"yes": 1, "no": 0}}}}
        resp = await client.post("/api/client/metrics", json=body, headers=client_headers())
        assert resp.status == 202
    await client.forwarder.flush()
    sent = [m for rec in stub.delivered() for m in rec.body.get("impactMetrics", [])]
    by_name = {m["name"]: m for m in sent}
    assert by_name["signups"]["type"] == "counter"
    assert by_name["signups"]["samples"] == [{"labels": {"plan": "pro"}, "value": 4.0}]  # counters add
    sample = by_name["latency"]["samples"][0]
    assert (sample["count"], sample["sum"]) == (6, 25.0)  # histogram buckets add
    assert sample["buckets"] == [{"le": 5.0, "count": 2}, {"le": "+Inf", "count": 6}]
    # Sent once: the next flush sends no impact metrics again.
    await client.forwarder.flush()
    assert sum(len(rec.body.get("impactMetrics", [])) for rec in stub.delivered()) == 2


async def test_a_chained_proxy_keeps_the_impact_metrics_it_is_forwarded_under_their_app(
        forwarding_client, make_client, stub, tmp_path):
    """The bulk body one proxy sends is what the next proxy of a chain takes: each impact entry
    names its app (a bulk body has none of its own), so the next proxy files it, not drops it."""
    client = await forwarding_client()
    counter = {"name": "signups", "help": "sign-ups", "type": "counter",
               "samples": [{"value": 3, "labels": {"plan": "pro"}}]}
    resp = await client.post("/api/client/metrics", json={"appName": "web", "instanceId": "i-1",
                                                          "impactMetrics": [counter]}, headers=client_headers())
    assert resp.status == 202
    await client.forwarder.flush()
    [sent] = [rec.body for rec in stub.delivered() if rec.body.get("impactMetrics")]
    assert [m["appName"] for m in sent["impactMetrics"]] == ["web"]
    downstream = await make_client(data_dir=str(tmp_path / "next-proxy"))
    resp = await downstream.post("/api/client/metrics/bulk", json=sent, headers=client_headers())
    assert resp.status == 202, await resp.text()
    text = await (await downstream.get("/internal-backstage/impact/metrics",
                                       headers={"Authorization": ADMIN_TOKEN})).text()
    assert 'signups{appName="web",environment="development",plan="pro"} 3' in text, text
