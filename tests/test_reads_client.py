"""The original Unleash metrics read API (`/api/client/...` read shapes), answered from the store
after posts through the real ingest path; time windows move with the injected clock."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.reads_support import RECORDED_AT, post, post_recorded_traffic
from tests.support import PROD_TOKEN, admin_headers, client_headers, iso

NODE_STRATEGIES = ["default", "applicationHostname", "gradualRolloutRandom", "gradualRolloutUserId",
                   "gradualRolloutSessionId", "userWithId", "remoteAddress", "flexibleRollout"]


def metrics(at: float, app: str, toggles: dict, instance: str = "i-1") -> dict:
    """A metrics body whose bucket is the minute from 5 to 4 minutes before `at` (the clock when the
    test began), as the recorded buckets lie before RECORDED_AT."""
    return {"appName": app, "instanceId": instance,
            "bucket": {"start": iso(at - 300), "stop": iso(at - 240), "toggles": toggles}}


def register(at: float, app: str, strategies: list[str], instance: str = "i-1") -> dict:
    return {"appName": app, "instanceId": instance, "strategies": strategies,
            "started": iso(at - 360), "interval": 10000}


async def get_json(client, path: str, status: int = 200):
    response = await client.get(path, headers=admin_headers())
    assert response.status == status, await response.text()
    return await response.json()


@pytest.fixture
async def proxy(client):
    """The proxy under test; its clock stands at half past the current hour (or at the recording,
    for tests marked clock_at)."""
    return client


async def test_seen_toggles_lists_last_hour_flags_and_counts(proxy, clock):
    at = clock.now()
    await post(proxy, "/api/client/metrics",
               metrics(at, "app-a", {"f1": {"yes": 3, "no": 1}, "f2": {"yes": 0, "no": 5}}))
    await post(proxy, "/api/client/metrics", metrics(at, "app-b", {"f1": {"yes": 7, "no": 0}}))
    assert await get_json(proxy, "/api/client/seen-toggles") == [
        {"appName": "app-a", "seenToggles": ["f1", "f2"], "metricsCount": 9},
        {"appName": "app-b", "seenToggles": ["f1"], "metricsCount": 7},
    ]
    clock.advance(1800)
    await post(proxy, "/api/client/metrics", metrics(at, "app-b", {"f3": {"yes": 1, "no": 1}}))
    # app-a's report is now more than an hour old (counts have one-minute resolution, as lastHour)
    clock.advance(1860)
    assert await get_json(proxy, "/api/client/seen-toggles") == [
        {"appName": "app-b", "seenToggles": ["f3"], "metricsCount": 2},
    ]


async def test_feature_toggles_windows_slide_with_the_clock(proxy, clock):
    at = clock.now()
    await post(proxy, "/api/client/metrics", metrics(at, "app-a", {"f1": {"yes": 3, "no": 1}}))
    clock.advance(600)
    await post(proxy, "/api/client/metrics",
               metrics(at, "app-b", {"f1": {"yes": 1, "no": 1}, "f2": {"yes": 2, "no": 0}}))
    body = await get_json(proxy, "/api/client/metrics/feature-toggles")
    assert body == {
        "lastHour": {"f1": {"yes": 4, "no": 2}, "f2": {"yes": 2, "no": 0}},
        "lastMinute": {"f1": {"yes": 1, "no": 1}, "f2": {"yes": 2, "no": 0}},
    }
    clock.advance(120)
    assert (await get_json(proxy, "/api/client/metrics/feature-toggles"))["lastMinute"] == {}
    clock.advance(3600 - 600)  # the first post left the last hour, the second did not
    assert (await get_json(proxy, "/api/client/metrics/feature-toggles"))["lastHour"] == {
        "f1": {"yes": 1, "no": 1}, "f2": {"yes": 2, "no": 0}
    }


@pytest.mark.clock_at(RECORDED_AT)  # replays the recording at the time it was made
async def test_applications_with_strategy_filter_and_two_day_window(proxy, clock):
    await post_recorded_traffic(proxy)
    body = await get_json(proxy, "/api/client/applications")
    apps = {a["appName"]: a for a in body["applications"]}
    assert sorted(apps) == ["bulk-app", "curl-app", "node-sdk-app", "py-sdk-app"]
    node = apps["node-sdk-app"]
    assert list(node) == ["appName", "strategies", "createdAt", "links"]
    assert node["strategies"] == NODE_STRATEGIES
    assert node["links"] == {"appDetails": "/api/client/applications/node-sdk-app"}
    assert node["createdAt"].startswith(iso(clock.now())[:-1] + ".") and node["createdAt"].endswith("Z")
    only = await get_json(proxy, "/api/client/applications?strategyName=userWithId")
    assert [a["appName"] for a in only["applications"]] == ["node-sdk-app"]
    rollout = await get_json(proxy, "/api/client/applications?strategyName=flexibleRollout")
    assert [a["appName"] for a in rollout["applications"]] == ["bulk-app", "curl-app", "node-sdk-app"]
    assert await get_json(proxy, "/api/client/applications?strategyName=nobody") == {"applications": []}
    clock.advance(2 * 86400 + 1)
    assert await get_json(proxy, "/api/client/applications") == {"applications": []}


async def test_application_details(proxy, clock):
    at = clock.now()
    await post(proxy, "/api/client/register", register(at, "app-a", ["default", "userWithId"]))
    clock.advance(30)
    await post(proxy, "/api/client/metrics", metrics(at, "app-a", {"f2": {"yes": 1}, "f1": {"no": 1}}, "i-2"))
    body = await get_json(proxy, "/api/client/applications/app-a")
    assert list(body) == ["appName", "instances", "strategies", "seenToggles"]
    assert body["appName"] == "app-a"
    assert [i["instanceId"] for i in body["instances"]] == ["i-2", "i-1"]  # newest first
    assert [list(i) for i in body["instances"]] == [["instanceId", "clientIp", "lastSeen", "createdAt"]] * 2
    assert body["instances"][0]["clientIp"] == "127.0.0.1"
    assert body["strategies"] == [{"appName": "app-a", "strategies": ["default", "userWithId"]}]
    assert body["seenToggles"] == ["f1", "f2"]


async def test_unknown_application_is_404_with_error_body(proxy):
    body = await get_json(proxy, "/api/client/applications/nobody", status=404)
    assert set(body) == {"id", "name", "message", "details"}
    assert body["name"] == "NotFoundError"
    assert body["details"][0]["message"] == body["message"]


async def test_application_names_are_url_decoded(proxy, clock):
    at = clock.now()
    name = "billing app/eu ✓"
    await post(proxy, "/api/client/register", register(at, name, ["default"]))
    listed = await get_json(proxy, "/api/client/applications?strategyName=default")
    [app] = listed["applications"]
    assert app["appName"] == name
    link = app["links"]["appDetails"]
    assert link == f"/api/client/applications/{quote(name, safe='')}"
    assert (await get_json(proxy, link))["appName"] == name


async def test_seen_apps_per_flag(proxy, clock):
    at = clock.now()
    await post(proxy, "/api/client/register", register(at, "app-a", ["default"]))
    await post(proxy, "/api/client/metrics", metrics(at, "app-a", {"f1": {"yes": 1}}))
    clock.advance(60)
    await post(proxy, "/api/client/metrics", metrics(at, "app-b", {"f1": {"no": 1}, "f2": {"yes": 1}}),
               client_headers(PROD_TOKEN))
    body = await get_json(proxy, "/api/client/seen-apps")
    assert sorted(body) == ["f1", "f2"]
    assert [a["appName"] for a in body["f1"]] == ["app-a", "app-b"]
    first = body["f1"][0]
    assert list(first) == ["appName", "createdAt", "updatedAt", "description", "strategies", "url", "color", "icon"]
    assert first["strategies"] == ["default"]
    assert first["description"] is None and first["url"] is None
    assert body["f2"][0]["updatedAt"] > first["updatedAt"]


@pytest.mark.parametrize("path", ["/api/client/seen-toggles", "/api/client/seen-apps", "/api/client/applications",
                                  "/api/client/metrics/feature-toggles"])
async def test_read_endpoints_need_an_admin_token(proxy, path):
    response = await proxy.get(path, headers=client_headers())
    assert response.status == 403
    assert (await response.json())["name"] == "ForbiddenError"
    assert (await proxy.get(path)).status == 401


async def test_empty_strategy_filter_is_400(proxy):
    body = await get_json(proxy, "/api/client/applications?strategyName=", status=400)
    assert body["details"][0]["path"] == "strategyName"


async def test_seen_apps_keeps_a_flag_whose_app_instances_were_pruned(make_client, make_settings, clock):
    from proxy.api.state import STORE
    from proxy.app import retention_policy

    at = clock.now()
    proxy = await make_client(instance_retention_hours=1)
    await post(proxy, "/api/client/register", register(at, "app-a", ["default"]))
    await post(proxy, "/api/client/metrics", metrics(at, "app-a", {"f1": {"yes": 1}}))
    clock.advance(2 * 3600)
    settings = make_settings(instance_retention_hours=1)
    proxy.app[STORE].fold()
    deleted = await proxy.app[STORE].prune(retention_policy(settings), clock.now())
    assert deleted["instances"] == 1, deleted
    body = await get_json(proxy, "/api/client/seen-apps")
    [entry] = body["f1"]
    assert entry["appName"] == "app-a" and entry["strategies"] == []
    assert entry["createdAt"] == entry["updatedAt"] == iso(at, ".000")  # when the proxy first saw it
