"""Custom events counted against metrics: from SDK posts and metric imports, per metric, hour and
environment, from the metric's definition on; GET .../events?hoursBack=N and the Prometheus family."""

from __future__ import annotations

import pytest

from tests.ld_events_support import STAGING_SDK_KEY, custom, index, ld_settings, sdk_headers
from tests.ld_support import HEADERS, custom_metric, error_of


@pytest.fixture
async def proxy(make_client):
    return await make_client(launchdarkly=ld_settings(None, flush_interval=3600.0))


def ms(clock, offset: float = 0.0) -> int:
    return int((clock.now() + offset) * 1000)


async def counts(proxy, metric: str, hours_back: int = 24, project: str = "proj") -> dict:
    response = await proxy.get(f"/api/v2/metrics/{project}/{metric}/events?hoursBack={hours_back}", headers=HEADERS)
    assert response.status == 200, await response.text()
    return await response.json()


async def define(proxy, body: dict) -> None:
    assert (await proxy.post("/api/v2/metrics/proj", json=body, headers=HEADERS)).status == 201


async def test_custom_events_count_per_metric_hour_and_environment(proxy, clock):
    await define(proxy, custom_metric("revenue", isNumeric=True, eventKey="purchase", successCriteria="HigherThanBaseline",
                                      unit="EUR"))
    await define(proxy, custom_metric("signups", eventKey="signed-up"))
    clock.advance(1)
    hour_ago = ms(clock, -3600)
    events = [custom("purchase", ms(clock), 10.5), custom("purchase", ms(clock), 4.5), custom("signed-up", ms(clock)),
              custom("unrelated", ms(clock)), index(ms(clock)), custom("purchase", hour_ago, 1.0)]
    assert (await proxy.post("/bulk", json=events, headers=sdk_headers())).status == 202
    assert (await proxy.post("/bulk", json=[custom("purchase", ms(clock), 2.0)],
                             headers=sdk_headers(STAGING_SDK_KEY))).status == 202
    imported = [{"kind": "custom", "key": "purchase", "creationDate": ms(clock), "metricValue": 3,
                 "contextKeys": {"user": "u9"}}]
    assert (await proxy.post("/v2/event-data-import/proj/production", json=imported, headers=HEADERS)).status == 202

    revenue = await counts(proxy, "revenue")
    this_hour = int(clock.now() // 3600 * 3600) * 1000
    assert revenue["eventKey"] == "purchase" and revenue["isNumeric"] is True
    assert revenue["items"] == [
        {"hour": this_hour, "environment": "production", "count": 3, "sum": 18.0},
        {"hour": this_hour, "environment": "staging", "count": 1, "sum": 2.0},
        {"hour": this_hour - 3600_000, "environment": "production", "count": 1, "sum": 1.0},
    ]
    assert (revenue["totalCount"], revenue["totalSum"]) == (5, 21.0)
    assert [(i["count"], i["sum"]) for i in (await counts(proxy, "revenue", 1))["items"]] == [(3, 18.0), (1, 2.0)]
    signups = await counts(proxy, "signups")
    assert [(i["count"], i["sum"]) for i in signups["items"]] == [(1, None)]
    assert signups["totalSum"] is None

    scrape = await (await proxy.get("/internal-backstage/prometheus")).text()
    assert ('metrics_proxy_launchdarkly_metric_events_total{project="proj",metric="revenue",environment="production"} 4'
            in scrape)
    assert ('metrics_proxy_launchdarkly_metric_event_value_total{project="proj",metric="revenue",'
            'environment="staging"} 2' in scrape)


async def test_a_metric_defined_after_its_events_counts_from_its_definition_on(proxy, clock):
    assert (await proxy.post("/bulk", json=[custom("late", ms(clock))], headers=sdk_headers())).status == 202
    clock.advance(5)
    await define(proxy, custom_metric("late-metric", eventKey="late"))
    assert (await counts(proxy, "late-metric"))["totalCount"] == 0
    clock.advance(5)
    assert (await proxy.post("/bulk", json=[custom("late", ms(clock))] * 2, headers=sdk_headers())).status == 202
    assert (await counts(proxy, "late-metric"))["totalCount"] == 2


async def test_events_of_another_project_do_not_count_and_bad_queries_are_refused(proxy, clock):
    await define(proxy, custom_metric("m", eventKey="e"))
    clock.advance(1)
    # The metric import names its own project: another project's metrics are not this one's.
    assert (await proxy.post("/v2/event-data-import/other/production", headers=HEADERS,
                             json=[{"kind": "custom", "key": "e", "creationDate": ms(clock)}])).status == 202
    assert (await counts(proxy, "m"))["totalCount"] == 0
    await error_of(await proxy.get("/api/v2/metrics/proj/nope/events", headers=HEADERS), 404, "not_found")
    await error_of(await proxy.get("/api/v2/metrics/proj/m/events?hoursBack=0", headers=HEADERS), 400,
                   "invalid_request")
    await error_of(await proxy.get("/api/v2/metrics/proj/m/events"), 401, "unauthorized")
