"""JSON Patch on metrics and metric groups: every RFC 6902 operation, a failing test, all or nothing."""

from __future__ import annotations

import pytest

from tests.ld_support import BETA, HEADERS, LD_SETTINGS, custom_metric, error_of, group_body


@pytest.fixture
async def ld(make_client):
    client = await make_client(launchdarkly=LD_SETTINGS)
    body = custom_metric("m", name="Orders", description="placed", tags=["shop"])
    assert (await client.post("/api/v2/metrics/proj", json=body, headers=HEADERS)).status == 201
    return client


async def patch(ld, ops, path="/api/v2/metrics/proj/m", headers=HEADERS):
    return await ld.patch(path, json=ops, headers=headers)


async def current(ld) -> dict:
    return await (await ld.get("/api/v2/metrics/proj/m", headers=HEADERS)).json()


OPERATIONS = [
    ([{"op": "add", "path": "/tags/-", "value": "checkout"}], {"tags": ["shop", "checkout"]}),
    ([{"op": "add", "path": "/unit", "value": "orders"}], {"unit": "orders"}),
    ([{"op": "remove", "path": "/description"}], {"description": None}),
    ([{"op": "replace", "path": "/name", "value": "Purchases"}], {"name": "Purchases"}),
    ([{"op": "move", "from": "/description", "path": "/unit"}], {"description": None, "unit": "placed"}),
    ([{"op": "copy", "from": "/name", "path": "/description"}], {"description": "Orders"}),
    ([{"op": "test", "path": "/name", "value": "Orders"}, {"op": "replace", "path": "/eventKey", "value": "buy"}],
     {"eventKey": "buy"}),
    ([{"op": "test", "path": "/_version", "value": 1}, {"op": "replace", "path": "/tags", "value": []}],
     {"tags": []}),
    ([{"op": "replace", "path": "/isNumeric", "value": True},
      {"op": "add", "path": "/successCriteria", "value": "HigherThanBaseline"}],
     {"isNumeric": True, "successCriteria": "HigherThanBaseline"}),
]


@pytest.mark.parametrize(("ops", "changed"), OPERATIONS, ids=[o[0]["op"] + o[0]["path"] for o, _ in OPERATIONS])
async def test_each_operation_applies(ld, ops, changed):
    before = await current(ld)
    response = await patch(ld, ops)
    assert response.status == 200, await response.text()
    after = await response.json()
    for field, value in changed.items():
        assert after.get(field) == value, field
    assert after["_version"] == before["_version"] + 1
    assert await current(ld) == after


REFUSED = [
    ([{"op": "test", "path": "/name", "value": "Other"}], 409, "optimistic_locking_error", "test"),
    ([{"op": "test", "path": "/_version", "value": 7}], 409, "optimistic_locking_error", "test"),
    ([{"op": "replace", "path": "/_id", "value": "x"}], 400, "invalid_request", "/_id"),
    ([{"op": "replace", "path": "/_links/self/href", "value": "x"}], 400, "invalid_request", "/_links"),
    ([{"op": "replace", "path": "/key", "value": "other"}], 400, "invalid_request", "/key"),
    ([{"op": "add", "path": "/colour", "value": "red"}], 400, "invalid_request", "/colour"),
    ([{"op": "replace", "path": "/kind", "value": "click"}], 400, "invalid_request", "selector"),
    ([{"op": "remove", "path": "/eventKey"}], 400, "invalid_request", "eventKey"),
    ([{"op": "replace", "path": "/percentileValue", "value": 50}], 400, "invalid_request", "percentileValue"),
    ([{"op": "replace", "path": "/tags", "value": "shop"}], 400, "invalid_request", "tags"),
    ([{"op": "remove", "path": "/unit"}], 400, "invalid_request", "unit"),
    ([{"op": "replace", "path": "/name"}], 400, "invalid_request", "value"),
    ([{"op": "move", "path": "/name"}], 400, "invalid_request", "from"),
    ([{"op": "jump", "path": "/name"}], 400, "invalid_request", "op"),
    ([], 400, "invalid_request", ""),
    # all or nothing: a good operation, then a bad one, changes nothing
    ([{"op": "replace", "path": "/name", "value": "Changed"}, {"op": "replace", "path": "/_version", "value": 9}],
     400, "invalid_request", "/_version"),
    ([{"op": "replace", "path": "/name", "value": "Changed"}, {"op": "test", "path": "/name", "value": "Orders"}],
     409, "optimistic_locking_error", "test"),
]


@pytest.mark.parametrize(("ops", "status", "code", "named"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
async def test_a_refused_patch_changes_nothing(ld, ops, status, code, named):
    before = await current(ld)
    message = await error_of(await patch(ld, ops), status, code)
    assert named in message
    assert await current(ld) == before


async def test_patching_a_group(ld):
    for key in ("a", "b"):
        await ld.post("/api/v2/metrics/proj", json=custom_metric(key), headers=HEADERS)
    await ld.post("/api/v2/projects/proj/metric-groups", json=group_body("g", ["m", "a"]), headers=BETA)
    path = "/api/v2/projects/proj/metric-groups/g"
    ops = [{"op": "replace", "path": "/name", "value": "Checkout"},
           {"op": "add", "path": "/metrics/-", "value": {"key": "b", "nameInGroup": "paid"}},
           {"op": "move", "from": "/metrics/0", "path": "/metrics/2"},
           {"op": "replace", "path": "/maintainerId", "value": "member-2"}]
    response = await patch(ld, ops, path, BETA)
    assert response.status == 200, await response.text()
    group = await response.json()
    assert group["name"] == "Checkout" and group["_version"] == 2
    assert [m["key"] for m in group["metrics"]] == ["a", "b", "m"]
    assert group["maintainer"] == {"key": "member-2", "kind": "member"}
    await error_of(await patch(ld, [{"op": "add", "path": "/metrics/-", "value": {"key": "nope", "nameInGroup": "x"}}],
                               path, BETA), 400, "invalid_request")
    await error_of(await patch(ld, [{"op": "replace", "path": "/_version", "value": 1}], path, BETA), 400,
                   "invalid_request")
    await error_of(await patch(ld, [{"op": "test", "path": "/name", "value": "Old"}], path, BETA), 409,
                   "optimistic_locking_error")
    await error_of(await patch(ld, [{"op": "remove", "path": "/name"}], path, {"Authorization": HEADERS["Authorization"]}),
                   403, "forbidden")
