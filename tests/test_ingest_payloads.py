"""Every recorded SDK request is accepted and lands in the store with exact counts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from proxy.api.state import INGEST_STATS, STORE
from tests.reads_support import RECORDED_AT
from tests.support import PAYLOADS, admin_headers, client_headers, epoch_ms, hour_start, iso, recorded_requests

METRICS = recorded_requests("metrics")
REGISTRATIONS = recorded_requests("register")


def expected_counts(bodies: list[dict]) -> Counter:
    totals: Counter = Counter()
    for body in bodies:
        for flag, toggle in body["bucket"]["toggles"].items():
            totals[(body["appName"], flag, "yes")] += toggle.get("yes", 0)
            totals[(body["appName"], flag, "no")] += toggle.get("no", 0)
    return totals


def stored_counts(rows) -> Counter:
    totals: Counter = Counter()
    for _env, app, flag, yes, no in rows:
        totals[(app, flag, "yes")] += yes
        totals[(app, flag, "no")] += no
    return totals


def test_fixtures_cover_both_sdks():
    assert {r["file"].split("/")[0] for r in METRICS} == {
        "python-sdk-UnleashClient-6.9.1",
        "node-sdk-unleash-client-6.12.1",
    }
    assert len(METRICS) == 8 and len(REGISTRATIONS) == 2


# Buckets are accepted within 48 hours of the proxy's clock: replayed at the time they were recorded.
@pytest.mark.clock_at(RECORDED_AT)
@pytest.mark.parametrize("record", METRICS + REGISTRATIONS, ids=lambda r: r["file"])
async def test_recorded_sdk_request_is_accepted(client, record):
    # Replay the request as the SDK sent it: same path, same headers, same bytes.
    headers = {k: v for k, v in record["headers"].items() if k.lower() not in ("host", "content-length", "connection")}
    headers["Authorization"] = client_headers()["Authorization"]
    resp = await client.post(record["path"], data=json.dumps(record["body"]).encode(), headers=headers)
    assert resp.status == 202, await resp.text()
    assert await resp.read() == b""


# The recorded buckets are dated when they were recorded: the clock stands there, so the stored
# hours are recent to the proxy and no retention can take them before they are read back.
@pytest.mark.clock_at(RECORDED_AT)
async def test_all_recorded_metrics_land_with_exact_counts(client):
    for record in METRICS:
        resp = await client.post(record["path"], json=record["body"], headers=client_headers())
        assert resp.status == 202
    rows = await client.app[STORE].totals()
    assert stored_counts(rows) == expected_counts([r["body"] for r in METRICS])
    # Environment comes from the token (default:development...), never from the body.
    assert {env for env, *_ in rows} == {"development"}


async def test_counts_are_filed_under_the_hour_of_bucket_stop(client, clock):
    hour = hour_start(clock.now())
    body = json.loads((PAYLOADS / "curl" / "metrics.json").read_text())
    body["bucket"]["start"] = iso(hour - 30, ".000")  # in the hour before
    body["bucket"]["stop"] = iso(hour + 30, ".123456789")
    resp = await client.post("/api/client/metrics", json=body, headers=client_headers())
    assert resp.status == 202
    store = client.app[STORE]
    store.fold()
    cursor = await store.reader.execute("SELECT DISTINCT hour FROM hourly_counts")
    hours = [row[0] for row in await cursor.fetchall()]
    assert hours == [hour]


async def test_variants_are_merged_per_name(client, clock):
    body = {
        "appName": "variant-app",
        "bucket": {"start": epoch_ms(clock.now() - 1), "stop": epoch_ms(clock.now()),
                   "toggles": {"f": {"yes": 3, "no": 0, "variants": {"red": 2, "blue": 1}}}},
    }
    for _ in range(2):
        assert (await client.post("/api/client/metrics", json=body, headers=client_headers())).status == 202
    body["bucket"]["toggles"]["f"]["variants"] = {"green": 3}
    assert (await client.post("/api/client/metrics", json=body, headers=client_headers())).status == 202
    store = client.app[STORE]
    store.fold()
    cursor = await store.reader.execute("SELECT yes, no, variants FROM hourly_counts WHERE app_name='variant-app'")
    (yes, no, variants), = await cursor.fetchall()
    assert (yes, no, json.loads(variants)) == (9, 0, {"red": 4, "blue": 2, "green": 3})


@pytest.mark.clock_at(RECORDED_AT)  # bulk.json's rows are stamped at the recording
async def test_curl_bulk_payload_keeps_only_the_token_environment(client):
    body = json.loads((PAYLOADS / "curl" / "bulk.json").read_text())
    resp = await client.post("/api/client/metrics/bulk", json=body, headers=client_headers())
    assert resp.status == 202
    rows = await client.app[STORE].totals()
    # The production row (99/99) is refused under a development token, and counted as such.
    assert rows == [
        ("development", "bulk-app", "harness.flag-b", 10, 2),
        ("development", "bulk-app", "harness.variant-flag", 6, 0),
    ]
    assert client.app[INGEST_STATS].dropped["environment_mismatch"] == 1


async def test_registration_records_the_instance(client):
    record = REGISTRATIONS[0]
    resp = await client.post("/api/client/register", json=record["body"], headers=client_headers())
    assert resp.status == 202
    store = client.app[STORE]
    store.fold()
    cursor = await store.reader.execute(
        "SELECT app_name, instance_id, environment, sdk_version, strategies, interval, client_ip FROM instances"
    )
    (app, instance, env, sdk, strategies, interval, ip), = await cursor.fetchall()
    body = record["body"]
    assert (app, instance, env, sdk) == (body["appName"], body["instanceId"], "development", body["sdkVersion"])
    assert json.loads(strategies) == body["strategies"]
    assert interval == body["interval"]
    assert ip == "127.0.0.1"


@pytest.mark.clock_at(RECORDED_AT)  # curl/metrics.json's bucket stopped at the recording
async def test_feature_toggles_endpoint_reads_back_totals(client, clock):
    body = json.loads((PAYLOADS / "curl" / "metrics.json").read_text())
    assert (await client.post("/api/client/metrics", json=body, headers=client_headers())).status == 202
    resp = await client.get("/api/client/metrics/feature-toggles", headers=admin_headers())
    assert resp.status == 200
    data = await resp.json()
    assert data["lastMinute"]["harness.flag-a"] == {"yes": 5, "no": 3}
    assert data["lastHour"]["harness.variant-flag"] == {"yes": 4, "no": 0}
    clock.advance(180)
    data = await (await client.get("/api/client/metrics/feature-toggles", headers=admin_headers())).json()
    assert data["lastMinute"] == {}
    assert data["lastHour"]["harness.flag-a"] == {"yes": 5, "no": 3}
