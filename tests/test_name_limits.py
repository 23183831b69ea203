"""Names and numbers are bounded by Unleash's own limits (issue 17, part B; docs/limits.md lists
each limit and where Unleash sets it). A body breaking one is refused whole with a 400 naming the
field, and nothing of it is stored; a value right at a limit is accepted."""

from __future__ import annotations

import json

import pytest

from proxy.api.state import INGEST_STATS, STORE
from tests.support import CLIENT_TOKEN, FRONTEND_TOKEN, epoch_ms

HUGE = "x" * 200_000
NAME_101 = "n" * 101
TEXT_256 = "t" * 256
U64 = 2**64


def metrics(now: float, toggles: dict | None = None, **fields) -> dict:
    toggles = {"flag-a": {"yes": 1, "no": 0}} if toggles is None else toggles
    return {"appName": "app", "instanceId": "i-1",
            "bucket": {"start": epoch_ms(now - 10), "stop": epoch_ms(now), "toggles": toggles}, **fields}


def register(**fields) -> dict:
    return {"appName": "app", "instanceId": "i-1", "interval": 15000, "started": "2000-01-01T00:00:00Z",
            "strategies": ["default"], **fields}


def bulk(now: float, metric: dict | None = None, app: dict | None = None) -> dict:
    row = {"featureName": "flag-a", "appName": "app", "environment": "development", "timestamp": epoch_ms(now),
           "yes": 1, "no": 0, **(metric or {})}
    application = {"appName": "app", "instanceId": "i-1", "environment": "development", "interval": 15000,
                   "started": "2000-01-01T00:00:00Z", "strategies": ["default"], **(app or {})}
    return {"applications": [application], "metrics": [row]}


def custom(name: str = "jobs_done", labels: dict | None = None) -> dict:
    return {"metrics": [{"name": name, "value": 1, "labels": labels or {}}]}


CLIENT_METRICS, FRONTEND_METRICS = "/api/client/metrics", "/api/frontend/client/metrics"
CLIENT_REGISTER, FRONTEND_REGISTER = "/api/client/register", "/api/frontend/client/register"
BULK, CUSTOM = "/api/client/metrics/bulk", "/api/client/metrics/custom"

# (case, path, body given the clock's now, the field details[0].path names)
REFUSED = [
    ("flag name of 200,000 characters", CLIENT_METRICS, lambda t: metrics(t, {HUGE: {"yes": 1}}), "bucket.toggles"),
    ("flag name of 101 characters", CLIENT_METRICS, lambda t: metrics(t, {NAME_101: {"yes": 1}}), "bucket.toggles"),
    ("empty flag name", CLIENT_METRICS, lambda t: metrics(t, {"": {"yes": 1}}), "bucket.toggles"),
    ("frontend flag name of 200,000 characters", FRONTEND_METRICS, lambda t: metrics(t, {HUGE: {"yes": 1}}),
     "bucket.toggles"),
    ("variant name of 200,000 characters", CLIENT_METRICS,
     lambda t: metrics(t, {"flag-a": {"yes": 1, "variants": {HUGE: 1}}}), "bucket.toggles['flag-a'].variants"),
    ("empty variant name", FRONTEND_METRICS,
     lambda t: metrics(t, {"flag-a": {"yes": 1, "variants": {"": 1}}}), "bucket.toggles['flag-a'].variants"),
    ("instanceId of 200,000 characters", CLIENT_METRICS, lambda t: metrics(t, instanceId=HUGE), "instanceId"),
    ("sdkVersion of 200,000 characters", FRONTEND_METRICS, lambda t: metrics(t, sdkVersion=HUGE), "sdkVersion"),
    ("appName of 256 characters", CLIENT_METRICS, lambda t: metrics(t, appName=TEXT_256), "appName"),
    ("register interval of 2^64", CLIENT_REGISTER, lambda t: register(interval=U64), "interval"),
    ("register strategy name of 200,000 characters", CLIENT_REGISTER,
     lambda t: register(strategies=["default", HUGE]), "strategies[1]"),
    ("register instanceId of 200,000 characters", CLIENT_REGISTER, lambda t: register(instanceId=HUGE), "instanceId"),
    ("register sdkVersion of 200,000 characters", CLIENT_REGISTER, lambda t: register(sdkVersion=HUGE), "sdkVersion"),
    ("register project of 101 characters", CLIENT_REGISTER, lambda t: register(projects=[NAME_101]), "projects[0]"),
    ("register empty project", CLIENT_REGISTER, lambda t: register(projects=[""]), "projects[0]"),
    ("frontend register interval of 2^64", FRONTEND_REGISTER, lambda t: {"appName": "app", "interval": U64},
     "interval"),
    ("frontend register instanceId of 200,000 characters", FRONTEND_REGISTER,
     lambda t: {"appName": "app", "instanceId": HUGE}, "instanceId"),
    ("frontend register sdkVersion of 200,000 characters", FRONTEND_REGISTER,
     lambda t: {"appName": "app", "sdkVersion": HUGE}, "sdkVersion"),
    ("bulk featureName of 200,000 characters", BULK, lambda t: bulk(t, {"featureName": HUGE}),
     "metrics[0].featureName"),
    ("bulk empty featureName", BULK, lambda t: bulk(t, {"featureName": ""}), "metrics[0].featureName"),
    ("bulk variant name of 200,000 characters", BULK, lambda t: bulk(t, {"variants": {HUGE: 1}}),
     "metrics[0].variants"),
    ("bulk row environment of 101 characters", BULK, lambda t: bulk(t, {"environment": NAME_101}),
     "metrics[0].environment"),
    ("bulk application instanceId of 200,000 characters", BULK, lambda t: bulk(t, app={"instanceId": HUGE}),
     "applications[0].instanceId"),
    ("bulk application strategy of 200,000 characters", BULK, lambda t: bulk(t, app={"strategies": [HUGE]}),
     "applications[0].strategies[0]"),
    ("bulk application interval of 2^64", BULK, lambda t: bulk(t, app={"interval": U64}),
     "applications[0].interval"),
    ("bulk application sdkVersion of 200,000 characters", BULK, lambda t: bulk(t, app={"sdkVersion": HUGE}),
     "applications[0].sdkVersion"),
    ("bulk application environment of 101 characters", BULK, lambda t: bulk(t, app={"environment": NAME_101}),
     "applications[0].environment"),
    ("bulk application project of 101 characters", BULK, lambda t: bulk(t, app={"projects": [NAME_101]}),
     "applications[0].projects[0]"),
    ("bulk connectVia instanceId of 200,000 characters", BULK,
     lambda t: bulk(t, app={"connectVia": [{"appName": "edge", "instanceId": HUGE}]}),
     "applications[0].connectVia[0].instanceId"),
    ("custom metric name of 256 characters", CUSTOM, lambda t: custom(TEXT_256), "metrics[0].name"),
    ("custom label name of 256 characters", CUSTOM, lambda t: custom(labels={TEXT_256: "v"}), "metrics[0].labels"),
    ("custom label value of 200,000 characters", CUSTOM, lambda t: custom(labels={"k": HUGE}),
     "metrics[0].labels['k']"),
]


def _token(path: str) -> str:
    return FRONTEND_TOKEN if "/frontend/" in path else CLIENT_TOKEN


async def _post(client, path: str, body: dict):
    return await client.post(path, data=json.dumps(body), headers={"Authorization": _token(path),
                                                                   "Content-Type": "application/json"})


@pytest.mark.parametrize("case, path, body, field", REFUSED, ids=[c[0] for c in REFUSED])
async def test_a_name_or_number_beyond_its_limit_is_a_400_naming_the_field(client, clock, case, path, body, field):
    resp = await _post(client, path, body(clock.now()))
    assert resp.status == 400, (resp.status, (await resp.text())[:300])
    text = await resp.text()
    assert len(text) < 2000, "the error echoes the oversized value"
    error = json.loads(text)
    assert error["name"] == "BadDataError"
    assert error["details"][0]["path"] == field, error
    store = client.app[STORE]
    assert await store.totals() == []
    assert client.app[INGEST_STATS].requests == {}


async def test_values_right_at_the_limits_are_accepted(client, clock):
    now = clock.now()
    flag, variant, strategy, project = "f" * 100, "v" * 100, "s" * 100, "p" * 100
    app, instance, sdk = "a" * 255, "i" * 255, "s" * 255
    posts = [
        (CLIENT_METRICS, metrics(now, {flag: {"yes": 1, "no": 2, "variants": {variant: 1}}}, appName=app,
                                 instanceId=instance, sdkVersion=sdk)),
        (CLIENT_REGISTER, register(appName=app, instanceId=instance, sdkVersion=sdk, interval=4_294_967_295,
                                   strategies=[strategy, None, ""], projects=[project])),
        (FRONTEND_REGISTER, {"appName": app, "instanceId": instance, "sdkVersion": sdk, "interval": 4_294_967_295}),
        (BULK, bulk(now, {"featureName": flag, "appName": app, "variants": {variant: 1}},
                    {"appName": app, "instanceId": instance, "sdkVersion": sdk, "interval": 4_294_967_295,
                     "strategies": [strategy], "projects": [project]})),
        (CUSTOM, custom("m" * 255, {"l" * 255: "v" * 255})),
    ]
    for path, body in posts:
        resp = await _post(client, path, body)
        assert resp.status == 202, (path, await resp.text())
    assert await client.app[STORE].totals() == [("development", app, flag, 2, 2)]


async def test_an_empty_strategy_name_is_dropped_like_unleash_does(client):
    # Unleash's register schema keeps `joi.string()` entries and strips the rest; an empty string
    # is no joi.string(), so it goes like a null or a number.
    resp = await _post(client, CLIENT_REGISTER, register(strategies=["default", "", None]))
    assert resp.status == 202, await resp.text()
    found = await (await client.get("/api/admin/metrics/applications/app",
                                    headers={"Authorization": "*:*.test-admin-secret"})).json()
    assert found["strategies"] == ["default"]


async def test_an_impact_metric_beyond_a_limit_is_dropped_and_counted_not_the_post(client, clock):
    """Impact metrics never cost a post its usage counts (Unleash logs their failures and keeps the
    flag metrics), so an entry over a limit is dropped and counted like any malformed entry."""
    def entry(name: str = "requests", labels: dict | None = None) -> dict:
        return {"name": name, "help": "h", "type": "counter", "samples": [{"value": 1, "labels": labels or {}}]}

    impact = [entry(TEXT_256), entry(labels={TEXT_256: "v"}), entry(labels={"k": HUGE}), entry()]
    resp = await _post(client, CLIENT_METRICS, metrics(clock.now(), impactMetrics=impact))
    assert resp.status == 202, await resp.text()
    assert client.app[INGEST_STATS].dropped["impact_metric_invalid"] == 3
    assert await client.app[STORE].totals() == [("development", "app", "flag-a", 1, 0)]


@pytest.mark.parametrize("header", ["UNLEASH-INSTANCEID", "UNLEASH-SDK"])
@pytest.mark.parametrize("path", [CLIENT_METRICS, CLIENT_REGISTER, FRONTEND_METRICS, FRONTEND_REGISTER])
async def test_the_sdk_headers_that_stand_in_for_body_fields_have_their_limits(client, clock, header, path):
    """A body without instanceId or sdkVersion takes them from these headers: the same 255."""
    body = {CLIENT_METRICS: {"appName": "app"}, FRONTEND_METRICS: {"appName": "app"},
            CLIENT_REGISTER: {"appName": "app", "interval": 1, "started": 0, "strategies": []},
            FRONTEND_REGISTER: {"appName": "app"}}[path]
    headers = {"Authorization": _token(path), "Content-Type": "application/json"}
    resp = await client.post(path, data=json.dumps(body), headers={**headers, header: "h" * 256})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["details"][0]["path"] == header
    assert (await client.post(path, data=json.dumps(body), headers={**headers, header: "h" * 255})).status == 202
