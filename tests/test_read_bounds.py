"""The bounds of read answers. read_max_flags: every list of flags names at most that many, the
first by name, and a list cut short says how many there were. read_max_answer_bytes: seen-toggles
and seen-apps (apps x flags) stop where it falls and say how many apps (flags) there are. Within
the bounds the answers are Unleash's shapes, field for field (tests/test_reads_admin.py,
test_reads_client.py)."""

from __future__ import annotations

from tests.reads_support import post
from tests.support import PROD_TOKEN, admin_headers, client_headers, iso

FLAGS = ["f1", "f2", "f3", "f4", "f5"]


def metrics(at: float, app: str, flags: list[str]) -> dict:
    return {"appName": app, "instanceId": "i-1",
            "bucket": {"start": iso(at - 20), "stop": iso(at - 10),
                       "toggles": {flag: {"yes": 1, "no": 0} for flag in reversed(flags)}}}


async def get(client, path: str):
    response = await client.get(path, headers=admin_headers())
    assert response.status == 200, await response.text()
    return response, await response.json()


async def proxy_with_many_flags(make_client, clock, **settings):
    """app-a reported five flags (f1 in two environments), app-b two."""
    proxy = await make_client(**settings)
    await post(proxy, "/api/client/register", {"appName": "app-a", "instanceId": "i-1", "strategies": ["default"],
                                                "started": iso(clock.now() - 60), "interval": 10})
    await post(proxy, "/api/client/metrics", metrics(clock.now(), "app-a", FLAGS))
    await post(proxy, "/api/client/metrics", metrics(clock.now(), "app-a", ["f1"]), client_headers(PROD_TOKEN))
    await post(proxy, "/api/client/metrics", metrics(clock.now(), "app-b", ["f1", "f2"]))
    return proxy


async def test_each_list_keeps_the_first_flags_by_name_and_counts_them_all(make_client, clock):
    proxy = await proxy_with_many_flags(make_client, clock, read_max_flags=3)

    _, windows = await get(proxy, "/api/client/metrics/feature-toggles")
    assert list(windows["lastHour"]) == list(windows["lastMinute"]) == ["f1", "f2", "f3"]
    assert windows["lastHour"]["f1"] == {"yes": 3, "no": 0}  # both environments and both apps
    assert (windows["lastHourTotal"], windows["lastMinuteTotal"]) == (5, 5)

    _, seen = await get(proxy, "/api/client/seen-toggles")
    assert seen == [
        {"appName": "app-a", "seenToggles": ["f1", "f2", "f3"], "metricsCount": 6, "seenTogglesTotal": 5},
        {"appName": "app-b", "seenToggles": ["f1", "f2"], "metricsCount": 2},  # whole: no total
    ]

    _, app = await get(proxy, "/api/client/applications/app-a")
    assert (app["seenToggles"], app["seenTogglesTotal"]) == (["f1", "f2", "f3"], 5)
    _, whole = await get(proxy, "/api/client/applications/app-b")
    assert whole["seenToggles"] == ["f1", "f2"] and "seenTogglesTotal" not in whole

    _, admin_app = await get(proxy, "/api/admin/metrics/applications/app-a")
    assert [t["name"] for t in admin_app["seenToggles"]] == ["f1", "f2", "f3"]
    assert admin_app["seenTogglesTotal"] == 5

    response, by_flag = await get(proxy, "/api/client/seen-apps")
    assert list(by_flag) == ["f1", "f2", "f3"]
    assert [a["appName"] for a in by_flag["f1"]] == ["app-a", "app-b"]
    assert response.headers["Metrics-Proxy-Flags-Total"] == "5"  # a map of flags has no room for a field


async def test_answers_within_the_bound_carry_no_count(make_client, clock):
    proxy = await proxy_with_many_flags(make_client, clock, read_max_flags=5)
    _, windows = await get(proxy, "/api/client/metrics/feature-toggles")
    assert set(windows) == {"lastHour", "lastMinute"} and len(windows["lastHour"]) == 5
    _, seen = await get(proxy, "/api/client/seen-toggles")
    assert all(set(app) == {"appName", "seenToggles", "metricsCount"} for app in seen)
    _, app = await get(proxy, "/api/admin/metrics/applications/app-a")
    assert "seenTogglesTotal" not in app and len(app["seenToggles"]) == 5
    response, by_flag = await get(proxy, "/api/client/seen-apps")
    assert len(by_flag) == 5 and "Metrics-Proxy-Flags-Total" not in response.headers


async def test_openapi_describes_the_counts_and_the_header(client):
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    for struct, field in (("FeatureToggleWindows", "lastHourTotal"), ("SeenToggles", "seenTogglesTotal"),
                          ("ClientApplication", "seenTogglesTotal"), ("AdminApplication", "seenTogglesTotal")):
        assert field in schemas[struct]["properties"] and field not in schemas[struct].get("required", [])
    ok = document["paths"]["/api/client/seen-apps"]["get"]["responses"]["200"]
    assert ok["headers"]["Metrics-Proxy-Flags-Total"]["schema"]["type"] == "integer"


async def test_the_answers_that_grow_with_apps_times_flags_stop_at_read_max_answer_bytes(make_client, clock, tmp_path):
    """seen-toggles and seen-apps are apps x flags: they list apps (flags) in name order while the
    answer fits read_max_answer_bytes, and a header says how many there are."""
    many_apps = await make_client(read_max_answer_bytes=1024)
    for a in range(30):
        await post(many_apps, "/api/client/metrics", metrics(clock.now(), f"app-{a:02d}", FLAGS))
    response, seen = await get(many_apps, "/api/client/seen-toggles")
    assert len(await response.read()) <= 1024
    assert 0 < len(seen) < 30 and [app["appName"] for app in seen] == [f"app-{a:02d}" for a in range(len(seen))]
    assert all(app["seenToggles"] == FLAGS for app in seen)  # an app is listed whole or not at all
    assert response.headers["Metrics-Proxy-Apps-Total"] == "30"

    # each flag: 3 apps, ~520 bytes (a store of its own)
    few_apps = await make_client(read_max_answer_bytes=1024, data_dir=str(tmp_path / "few"))
    for a in range(3):
        await post(few_apps, "/api/client/metrics", metrics(clock.now(), f"app-{a:02d}", FLAGS))
    response, by_flag = await get(few_apps, "/api/client/seen-apps")
    assert len(await response.read()) <= 1024
    assert 0 < len(by_flag) < 5 and list(by_flag) == FLAGS[:len(by_flag)]
    assert all(len(apps) == 3 for apps in by_flag.values())
    assert response.headers["Metrics-Proxy-Flags-Total"] == "5"
    response, _ = await get(few_apps, "/api/client/seen-toggles")
    assert "Metrics-Proxy-Apps-Total" not in response.headers
