"""The current Unleash admin shapes, answered from the store after the recorded SDK traffic went
through the real ingest path; compared field by field with Unleash 7.5.1's answers to that traffic."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.reads_support import (
    RECORDED_AT,
    RECORDED_HOUR,
    admin_response,
    post,
    post_recorded_traffic,
    same_shape,
)
from tests.support import HOUR, admin_headers, client_headers, iso


@pytest.fixture
async def recorded(make_client, clock):
    """A proxy that got the recorded traffic, its clock at the recording (set before it starts)."""
    clock.set(RECORDED_AT)
    client = await make_client()
    await post_recorded_traffic(client)
    return client


async def get_json(client, path: str, status: int = 200):
    response = await client.get(path, headers=admin_headers())
    assert response.status == status, await response.text()
    return await response.json()


async def test_applications_match_unleash_field_by_field(recorded):
    ours = await get_json(recorded, "/api/admin/metrics/applications")
    theirs = admin_response("applications.json")
    same_shape(ours, theirs)
    assert ours["total"] == theirs["total"] == 4
    for mine, unleash in zip(ours["applications"], theirs["applications"], strict=True):
        for field in ("appName", "strategies", "project", "environment", "usage", "description", "url"):
            assert mine[field] == unleash[field], (mine["appName"], field)


async def test_applications_query_paging_and_sorting(recorded):
    page = await get_json(recorded, "/api/admin/metrics/applications?limit=2&offset=1&sortOrder=desc")
    assert page["total"] == 4
    assert [a["appName"] for a in page["applications"]] == ["node-sdk-app", "curl-app"]
    found = await get_json(recorded, "/api/admin/metrics/applications?query=SDK")
    assert found["total"] == 2
    assert [a["appName"] for a in found["applications"]] == ["node-sdk-app", "py-sdk-app"]
    # `_` is a literal in the search, not SQL's one-character wildcard
    assert (await get_json(recorded, "/api/admin/metrics/applications?query=py_sdk"))["total"] == 0
    capped = await get_json(recorded, "/api/admin/metrics/applications?limit=5000")
    assert len(capped["applications"]) == 4


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=ten", "limit"), ("offset=-1", "offset"), ("sortBy=secret", "sortBy"),
     ("sortOrder=up", "sortOrder"), ("limit=0", "limit")],
)
async def test_bad_applications_parameters_are_400_naming_the_field(client, query, field):
    body = await get_json(client, f"/api/admin/metrics/applications?{query}", status=400)
    assert body["name"] == "BadDataError"
    assert body["details"][0]["path"] == field


async def test_application_matches_unleash(recorded):
    ours = await get_json(recorded, "/api/admin/metrics/applications/py-sdk-app")
    theirs = admin_response("application-py-sdk-app.json")
    same_shape(ours, theirs, unknown=frozenset({"description", "type"}))
    assert ours["links"] == theirs["links"]
    assert ours["strategies"] == theirs["strategies"] == []
    [instance] = ours["instances"]
    expected = theirs["instances"][0]
    for field in ("appName", "instanceId", "sdkVersion", "sdkType", "clientIp", "environment"):
        assert instance[field] == expected[field], field
    # Unleash lists only flags it defines; the proxy lists every flag the SDK reported.
    names = [toggle["name"] for toggle in ours["seenToggles"]]
    assert {t["name"] for t in theirs["seenToggles"]} <= set(names)
    assert names == sorted(names) and "harness.does-not-exist" in names


async def test_application_overview_matches_unleash(recorded):
    ours = await get_json(recorded, "/api/admin/metrics/applications/node-sdk-app/overview")
    theirs = admin_response("application-node-sdk-app-overview.json")
    same_shape(ours, theirs)
    assert ours["projects"] == theirs["projects"]
    [env] = ours["environments"]
    expected = theirs["environments"][0]
    for field in ("name", "instanceCount", "sdks", "frontendSdks", "backendSdks"):
        assert env[field] == expected[field], field
    assert ours["featureCount"] >= theirs["featureCount"]  # plus flags Unleash does not define


async def test_unknown_application_is_404_with_error_body(client):
    for path in ("/api/admin/metrics/applications/nobody", "/api/admin/metrics/applications/nobody/overview"):
        body = await get_json(client, path, status=404)
        assert body["name"] == "NotFoundError" and "nobody" in body["message"]
        assert set(body) == {"id", "name", "message", "details"}


async def test_instances_match_unleash_and_keep_to_the_last_day(recorded, clock):
    path = "/api/admin/metrics/instances/bulk-app/environment/development"
    ours = await get_json(recorded, path)
    theirs = admin_response("instances-bulk-app-development.json")
    same_shape(ours, theirs)
    assert [{k: v for k, v in i.items() if k != "lastSeen"} for i in ours["instances"]] == [
        {k: v for k, v in i.items() if k != "lastSeen"} for i in theirs["instances"]
    ]
    assert (await get_json(recorded, "/api/admin/metrics/instances/bulk-app/environment/production")) == {
        "instances": []
    }
    clock.advance(86400 + 1)
    assert (await get_json(recorded, path)) == {"instances": []}


@pytest.mark.parametrize("flag", ["flag-a", "flag-b", "variant-flag"])
async def test_raw_usage_equals_unleash_for_the_same_traffic(recorded, flag):
    ours = await get_json(recorded, f"/api/admin/client-metrics/features/harness.{flag}/raw?hoursBack=1")
    theirs = admin_response(f"raw-{flag}.json")
    same_shape(ours, theirs)
    key = lambda row: (row["environment"], row["appName"])  # noqa: E731
    assert sorted(ours["data"], key=key) == sorted(theirs["data"], key=key)


async def test_raw_usage_is_zero_filled_per_hour_app_and_environment(recorded, clock):
    clock.advance(2 * 3600)  # now 20:25; the counts are in the 18:00 hour
    body = await get_json(recorded, "/api/admin/client-metrics/features/harness.flag-a/raw?hoursBack=3")
    rows = body["data"]
    assert len(rows) == 3 * 3  # 3 apps x 1 environment x 3 hours
    curl = [r for r in rows if r["appName"] == "curl-app"]
    hour = RECORDED_AT // HOUR * HOUR
    assert [r["timestamp"] for r in curl] == [iso(hour + 2 * HOUR, ".000"), iso(hour + HOUR, ".000"), RECORDED_HOUR]
    assert [(r["yes"], r["no"], r["variants"]) for r in curl] == [(0, 0, {}), (0, 0, {}), (5, 3, {})]
    # the 18:00 hour is outside a 2-hour window: nothing to fill
    short = await get_json(recorded, "/api/admin/client-metrics/features/harness.flag-a/raw?hoursBack=2")
    assert short["data"] == []


async def test_raw_usage_hours_back_out_of_range_falls_back_to_24(recorded):
    for hours in ("0", "49", "-3"):
        body = await get_json(recorded, f"/api/admin/client-metrics/features/harness.flag-a/raw?hoursBack={hours}")
        assert len(body["data"]) == 3 * 24
    body = await get_json(recorded, "/api/admin/client-metrics/features/harness.flag-a/raw?hoursBack=x", 400)
    assert body["details"][0]["path"] == "hoursBack"


async def test_feature_summary_matches_unleash(recorded, clock):
    ours = await get_json(recorded, "/api/admin/client-metrics/features/harness.flag-a")
    theirs = admin_response("summary-flag-a.json")
    assert ours == theirs
    clock.advance(3600)  # 19:25: the 18:00 hour is no longer within the last hour
    later = await get_json(recorded, "/api/admin/client-metrics/features/harness.flag-a")
    assert later["lastHourUsage"] == [] and later["seenApplications"] == []


async def test_path_parameters_are_url_decoded(client, clock):
    name = "my app/ünïcode"
    await post(client, "/api/client/metrics", {
        "appName": name, "instanceId": "i-1",
        "bucket": {"start": iso(clock.now() - 300), "stop": iso(clock.now() - 240),
                   "toggles": {"odd flag/ä": {"yes": 2, "no": 1}}},
    })
    app = await get_json(client, f"/api/admin/metrics/applications/{quote(name, safe='')}")
    assert app["appName"] == name
    assert [t["name"] for t in app["seenToggles"]] == ["odd flag/ä"]
    usage = await get_json(client, f"/api/admin/client-metrics/features/{quote('odd flag/ä', safe='')}")
    assert usage["seenApplications"] == [name]
    assert usage["lastHourUsage"][0]["yes"] == 2


async def test_client_token_is_forbidden_and_open_mode_allows(make_client):
    proxy = await make_client()
    response = await proxy.get("/api/admin/metrics/applications", headers=client_headers())
    assert response.status == 403
    assert (await response.json())["name"] == "ForbiddenError"
    assert (await proxy.get("/api/admin/metrics/applications")).status == 401
    open_proxy = await make_client(auth="open")
    response = await open_proxy.get("/api/admin/metrics/applications")
    assert response.status == 200
    assert await response.json() == {"total": 0, "applications": []}
