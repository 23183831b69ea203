"""The metrics API served from the local store: each MetricPost rule, the representation, versions,
duplicates, deletes, and the error body (tests/fixtures/launchdarkly/errors.json)."""

from __future__ import annotations

import pytest

from tests.ld_support import FACTS, HEADERS, LD_SETTINGS, custom_metric, error_of


@pytest.fixture
async def ld(make_client):
    return await make_client(launchdarkly=LD_SETTINGS)


async def create(ld, body, project="proj"):
    return await ld.post(f"/api/v2/metrics/{project}", json=body, headers=HEADERS)


RULES = [
    ({"key": "c", "kind": "click", "urls": [{"kind": "exact", "url": "https://a.example"}]}, "selector"),
    ({"key": "c", "kind": "click", "selector": ".buy"}, "urls"),
    ({"key": "p", "kind": "pageview"}, "urls"),
    ({"key": "p", "kind": "pageview", "urls": []}, "urls"),
    ({"key": "m", "kind": "custom", "eventKey": "e"}, "isNumeric"),
    ({"key": "m", "kind": "custom", "isNumeric": False}, "eventKey"),
    ({"key": "m", "kind": "custom", "isNumeric": True, "eventKey": "e"}, "successCriteria"),
    (custom_metric("m", percentileValue=90), "percentileValue"),
    (custom_metric("m", analysisType="percentile"), "percentileValue"),
    (custom_metric("m", analysisType="percentile", percentileValue=101), "percentileValue"),
    ({"kind": "custom", "isNumeric": False, "eventKey": "e"}, "key"),
    ({"key": "m"}, "kind"),
    ({"key": "m", "kind": "trace"}, "kind"),
    (custom_metric("m", successCriteria="Higher"), "successCriteria"),
    (custom_metric("m", unitAggregationType="median"), "unitAggregationType"),
    (custom_metric("m", eventDefault={"value": 3}), "eventDefault"),
    (custom_metric("bad key"), "key"),
    (custom_metric("m", tags="not-a-list"), "tags"),
]


@pytest.mark.parametrize(("body", "field"), RULES, ids=[f"{i}-{f}" for i, (_, f) in enumerate(RULES)])
async def test_a_post_breaking_a_rule_is_a_400_naming_the_field(ld, body, field):
    message = await error_of(await create(ld, body), 400, "invalid_request")
    assert field in message
    listed = await (await ld.get("/api/v2/metrics/proj", headers=HEADERS)).json()
    assert listed["totalCount"] == 0


VALID = [
    {"key": "click-1", "kind": "click", "selector": ".buy", "urls": [{"kind": "exact", "url": "https://a.example"}]},
    {"key": "page-1", "kind": "pageview", "urls": [{"kind": "substring", "substring": "/cart"}]},
    custom_metric("conv-1"),
    custom_metric("conv-2", successCriteria="HigherThanBaseline"),
    {"key": "num-1", "kind": "custom", "isNumeric": True, "eventKey": "spend", "successCriteria": "LowerThanBaseline",
     "unit": "ms", "unitAggregationType": "average", "analysisType": "percentile", "percentileValue": 95},
]


@pytest.mark.parametrize("body", VALID, ids=[b["key"] for b in VALID])
async def test_a_valid_post_is_201_with_the_detailed_representation(ld, clock, body):
    response = await create(ld, {**body, "someFieldLaunchDarklyDoesNotKnow": 1})
    assert response.status == 201
    rep = await response.json()
    assert {"_id", "_versionId", "_version", "key", "name", "kind", "_links", "_site", "tags", "_creationDate",
            "lastModified", "dataSource"} <= set(rep)
    assert rep["key"] == body["key"] and rep["kind"] == body["kind"]
    assert rep["name"] == body["key"]  # the name defaults to the key
    assert rep["tags"] == [] and rep["_version"] == 1
    assert rep["_creationDate"] == int(clock.now() * 1000)
    assert rep["_links"]["self"]["href"] == f"/api/v2/metrics/proj/{body['key']}"
    assert rep["_links"]["parent"]["href"] == "/api/v2/metrics/proj"
    assert rep["_site"]["type"] == "text/html"
    assert "someFieldLaunchDarklyDoesNotKnow" not in rep  # unknown fields are ignored
    for field, value in body.items():
        assert rep[field] == value, field  # every posted field is kept (unit of a numeric metric too)
    fetched = await ld.get(f"/api/v2/metrics/proj/{body['key']}", headers=HEADERS)
    assert fetched.status == 200 and await fetched.json() == rep


async def test_a_duplicate_key_is_a_409_and_projects_are_apart(ld):
    assert (await create(ld, custom_metric("m"))).status == 201
    await error_of(await create(ld, custom_metric("m", name="again")), 409, "conflict")
    assert (await create(ld, custom_metric("m"), project="other")).status == 201


async def test_each_change_is_a_new_version_and_old_versions_stay_readable(ld, clock):
    first = await (await create(ld, custom_metric("m", name="one"))).json()
    clock.advance(60)
    patch = [{"op": "replace", "path": "/name", "value": "two"}]
    second = await (await ld.patch("/api/v2/metrics/proj/m", json=patch, headers=HEADERS)).json()
    assert second["_version"] == 2 and second["_versionId"] != first["_versionId"]
    assert second["_id"] == first["_id"] and second["_creationDate"] == first["_creationDate"]
    assert second["lastModified"] != first["lastModified"]
    old = await ld.get(f"/api/v2/metrics/proj/m?versionId={first['_versionId']}", headers=HEADERS)
    assert (await old.json())["name"] == "one"
    current = await (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).json()
    assert current["name"] == "two"
    await error_of(await ld.get("/api/v2/metrics/proj/m?versionId=nope", headers=HEADERS), 404, "not_found")


async def test_delete_is_204_then_404(ld):
    await create(ld, custom_metric("m"))
    response = await ld.delete("/api/v2/metrics/proj/m", headers=HEADERS)
    assert response.status == 204 and await response.read() == b""
    await error_of(await ld.get("/api/v2/metrics/proj/m", headers=HEADERS), 404, "not_found")
    await error_of(await ld.delete("/api/v2/metrics/proj/m", headers=HEADERS), 404, "not_found")
    assert (await create(ld, custom_metric("m"))).status == 201  # the key is free again


ERRORS = [
    ("missing token", "get", "/api/v2/metrics/proj", {}, None, 401, "unauthorized"),
    ("unknown token", "get", "/api/v2/metrics/proj", {"Authorization": "api-unknown"}, None, 401, "unauthorized"),
    ("sdk key", "get", "/api/v2/metrics/proj", {"Authorization": "sdk-12345678-aaaa"}, None, 401, "unauthorized"),
    ("mobile key", "get", "/api/v2/metrics/proj", {"Authorization": "mob-12345678-aaaa"}, None, 401, "unauthorized"),
    ("unleash token", "get", "/api/v2/metrics/proj", {"Authorization": "*:*.test-admin-secret"}, None, 401,
     "unauthorized"),
    ("unknown metric", "get", "/api/v2/metrics/proj/none", HEADERS, None, 404, "not_found"),
    ("patch unknown", "patch", "/api/v2/metrics/proj/none", HEADERS, b'[{"op":"remove","path":"/description"}]', 404,
     "not_found"),
    ("wrong method", "put", "/api/v2/metrics/proj/m", HEADERS, None, 405, "method_not_allowed"),
    ("not json", "post", "/api/v2/metrics/proj", HEADERS, b"{not json", 400, "invalid_request"),
    ("json patch not a list", "patch", "/api/v2/metrics/proj/m", HEADERS, b'{"op":"replace"}', 400,
     "invalid_request"),
    ("limit above 50", "get", "/api/v2/metrics/proj?limit=51", HEADERS, None, 400, "invalid_request"),
    ("unknown path under v2", "get", "/api/v2/flags/proj", HEADERS, None, 404, "not_found"),
]


@pytest.mark.parametrize(("name", "method", "path", "headers", "data", "status", "code"), ERRORS,
                         ids=[e[0] for e in ERRORS])
async def test_errors_have_launchdarklys_body(ld, name, method, path, headers, data, status, code):
    await create(ld, custom_metric("m"))
    if data is not None:
        headers = {**headers, "Content-Type": "application/json"}
    response = await ld.request(method, path, data=data, headers=headers)
    await error_of(response, status, code)
    assert code in (FACTS["codes"][str(status)] if status != 409 else FACTS["codes"]["409"])


async def test_a_wrong_content_type_is_415_and_a_large_body_413(make_client):
    ld = await make_client(launchdarkly=LD_SETTINGS, max_body_size=2048)
    response = await ld.post("/api/v2/metrics/proj", data=b"key=m", headers={**HEADERS, "Content-Type": "text/plain"})
    await error_of(response, 415, "invalid_request")
    big = custom_metric("m", description="x" * 3000)
    await error_of(await ld.post("/api/v2/metrics/proj", json=big, headers=HEADERS), 413, "invalid_request")


async def test_missing_authorization_is_401_with_open_auth_too(make_client):
    ld = await make_client(auth="open")
    await error_of(await ld.get("/api/v2/metrics/proj"), 401, "unauthorized")
    assert (await ld.get("/api/v2/metrics/proj", headers={"Authorization": "anything"})).status == 200


async def test_the_dated_api_version_is_accepted_on_metrics(ld):
    headers = {**HEADERS, "LD-API-Version": FACTS["current_api_version"]}
    assert (await ld.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=headers)).status == 201
    assert (await ld.get("/api/v2/metrics/proj", headers=headers)).status == 200


async def test_unleash_routes_keep_their_own_error_body(ld):
    response = await ld.post("/api/client/metrics", json={})
    body = await response.json()
    assert response.status == 401 and set(body) == {"id", "name", "message", "details"}


async def test_expand_on_a_metric(ld):
    await create(ld, custom_metric("m"))
    await ld.post("/api/v2/projects/proj/metric-groups", headers={**HEADERS, "LD-API-Version": "beta"},
                  json={"key": "g", "name": "G", "kind": "standard", "maintainerId": "u", "tags": [],
                        "metrics": [{"key": "m", "nameInGroup": "m"}]})
    rep = await (await ld.get("/api/v2/metrics/proj/m?expand=experiments,experimentCount,metricGroups,"
                              "metricGroupCount", headers=HEADERS)).json()
    assert rep["experiments"] == [] and rep["experimentCount"] == 0
    assert rep["metricGroupCount"] == 1 and [g["key"] for g in rep["metricGroups"]] == ["g"]
    assert rep["metricGroups"][0]["_links"]["self"]["href"] == "/api/v2/projects/proj/metric-groups/g"
    plain = await (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).json()
    assert "experiments" not in plain and "metricGroups" not in plain
    listed = await (await ld.get("/api/v2/metrics/proj?expand=experimentCount,metricGroupCount",
                                 headers=HEADERS)).json()
    assert listed["items"][0]["experimentCount"] == 0 and listed["items"][0]["metricGroupCount"] == 1
    message = await error_of(await ld.get("/api/v2/metrics/proj/m?expand=everything", headers=HEADERS), 400,
                             "invalid_request")
    assert "everything" in message
