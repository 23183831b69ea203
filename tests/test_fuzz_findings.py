"""What the schema fuzz (tests/test_openapi_fuzz.py) found, pinned as plain regression tests:
each was a 500 or an answer the document did not describe."""

from __future__ import annotations

from tests.support import admin_headers, client_headers


async def _bad_data_path(response) -> str:
    assert response.status == 400
    body = await response.json()
    assert body["name"] == "BadDataError"
    return body["details"][0]["path"]


async def test_a_register_started_beyond_the_year_9999_is_a_400_not_a_500(client):
    # Register reads an integer `started` as unix seconds: within the millisecond bound, not a date.
    body = {"appName": "a", "interval": 10, "started": 253_402_300_799_999, "strategies": []}
    response = await client.post("/api/client/register", json=body, headers=client_headers())
    assert await _bad_data_path(response) == "started"


async def test_epoch_milliseconds_beyond_the_year_9999_are_refused_where_they_arrive(client):
    bulk = {"applications": [], "metrics": [
        {"featureName": "f", "appName": "a", "environment": "development", "timestamp": 10**17}]}
    response = await client.post("/api/client/metrics/bulk", json=bulk, headers=client_headers())
    assert await _bad_data_path(response) == "metrics[0].timestamp"
    metrics = {"appName": "a", "bucket": {"start": -10**17, "stop": 0, "toggles": {}}}
    response = await client.post("/api/client/metrics", json=metrics, headers=client_headers())
    assert await _bad_data_path(response) == "bucket.start"


async def test_an_offset_beyond_sqlite_integers_is_a_400_not_a_500(client):
    response = await client.get("/api/admin/metrics/applications?offset=" + "9" * 25, headers=admin_headers())
    assert await _bad_data_path(response) == "offset"
    response = await client.get(f"/api/admin/metrics/applications?offset={2**63 - 1}", headers=admin_headers())
    assert response.status == 200
    assert (await response.json())["applications"] == []


async def test_a_query_parameter_given_twice_is_a_400_naming_it(client):
    response = await client.get("/api/admin/client-metrics/features/f/raw?hoursBack=2&hoursBack=3",
                                headers=admin_headers())
    assert await _bad_data_path(response) == "hoursBack"
    response = await client.get("/api/admin/metrics/applications?sortBy=appName&sortBy=createdAt",
                                headers=admin_headers())
    assert await _bad_data_path(response) == "sortBy"


async def test_an_empty_integer_parameter_means_its_default(client, clock):
    now_ms = int(clock.now() * 1000)
    metrics = {"appName": "a", "bucket": {"start": now_ms - 1000, "stop": now_ms, "toggles": {"f": {"yes": 1}}}}
    assert (await client.post("/api/client/metrics", json=metrics, headers=client_headers())).status == 202
    response = await client.get("/api/admin/metrics/applications?offset=&limit=", headers=admin_headers())
    assert response.status == 200
    assert [app["appName"] for app in (await response.json())["applications"]] == ["a"]
    raw = "/api/admin/client-metrics/features/f/raw?hoursBack="
    hours = {}
    for value in ("", "2"):
        response = await client.get(raw + value, headers=admin_headers())
        hours[value] = len((await response.json())["data"])
    assert hours == {"": 24, "2": 2}
