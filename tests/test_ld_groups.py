"""The metric-groups API (beta): the beta header, the rules of a group, the order and fields of its
metrics, and a metric that a group uses cannot be deleted."""

from __future__ import annotations

import pytest

from tests.ld_support import BETA, HEADERS, LD_SETTINGS, custom_metric, error_of, group_body

GROUPS = "/api/v2/projects/proj/metric-groups"


@pytest.fixture
async def ld(make_client):
    client = await make_client(launchdarkly=LD_SETTINGS)
    for key in ("visit", "cart", "buy"):
        assert (await client.post("/api/v2/metrics/proj", json=custom_metric(key), headers=HEADERS)).status == 201
    return client


@pytest.mark.parametrize(("method", "path"), [("get", GROUPS), ("post", GROUPS), ("get", GROUPS + "/g"),
                                              ("patch", GROUPS + "/g"), ("delete", GROUPS + "/g")])
@pytest.mark.parametrize("version", [None, "20240415"])
async def test_without_the_beta_header_every_call_is_403(ld, method, path, version):
    headers = dict(HEADERS) if version is None else {**HEADERS, "LD-API-Version": version}
    await error_of(await ld.request(method, path, json=[], headers=headers), 403, "forbidden")


async def test_the_beta_header_can_be_made_optional(make_client):
    ld = await make_client(launchdarkly={**LD_SETTINGS, "require_beta_header": False})
    await ld.post("/api/v2/metrics/proj", json=custom_metric("m"), headers=HEADERS)
    assert (await ld.post(GROUPS, json=group_body("g", ["m"]), headers=HEADERS)).status == 201
    assert (await ld.get(GROUPS + "/g", headers=HEADERS)).status == 200


async def test_a_group_echoes_its_metrics_in_order_with_their_fields(ld, clock):
    response = await ld.post(GROUPS, json=group_body("checkout", ["buy", "visit", "cart"], description="d"),
                             headers=BETA)
    assert response.status == 201
    group = await response.json()
    assert [m["key"] for m in group["metrics"]] == ["buy", "visit", "cart"]
    assert [m["nameInGroup"] for m in group["metrics"]] == ["step 0", "step 1", "step 2"]
    for member in group["metrics"]:
        assert {"key", "name", "kind", "_links", "isNumeric", "eventKey"} <= set(member)
        assert member["_links"]["self"]["href"] == f"/api/v2/metrics/proj/{member['key']}"
    assert group["_creationDate"] == group["_lastModified"] == int(clock.now() * 1000)
    assert group["_version"] == 1 and group["maintainer"] == {"key": "member-1", "kind": "member"}
    assert group["_links"]["self"]["href"] == GROUPS + "/checkout"
    assert group["_links"]["parent"]["href"] == "/api/v2/projects/proj"
    assert await (await ld.get(GROUPS + "/checkout", headers=BETA)).json() == group
    # a renamed metric shows its new name in the group
    await ld.patch("/api/v2/metrics/proj/cart", json=[{"op": "replace", "path": "/name", "value": "Cart"}],
                   headers=HEADERS)
    again = await (await ld.get(GROUPS + "/checkout", headers=BETA)).json()
    assert again["metrics"][2]["name"] == "Cart"
    expanded = await (await ld.get(GROUPS + "/checkout?expand=experiments,experimentCount", headers=BETA)).json()
    assert expanded["experiments"] == [] and expanded["experimentCount"] == 0


GROUP_RULES = [
    (group_body("g", ["visit", "nope"]), 400, "nope"),
    (group_body("g", ["visit", "visit"]), 400, "twice"),
    ({**group_body("g", ["visit"]), "metrics": [{"key": "visit"}]}, 400, "nameInGroup"),
    ({**group_body("g", ["visit"]), "metrics": []}, 400, "metrics"),
    ({**group_body("g", ["visit"]), "kind": "guardrail"}, 400, "kind"),
    ({k: v for k, v in group_body("g", ["visit"]).items() if k != "maintainerId"}, 400, "maintainerId"),
    ({k: v for k, v in group_body("g", ["visit"]).items() if k != "tags"}, 400, "tags"),
    ({k: v for k, v in group_body("g", ["visit"]).items() if k != "key"}, 400, "key"),
    ({k: v for k, v in group_body("g", ["visit"]).items() if k != "name"}, 400, "name"),
]


@pytest.mark.parametrize(("body", "status", "named"), GROUP_RULES, ids=[r[2] for r in GROUP_RULES])
async def test_group_rules(ld, body, status, named):
    message = await error_of(await ld.post(GROUPS, json=body, headers=BETA), status, "invalid_request")
    assert named in message
    assert (await (await ld.get(GROUPS, headers=BETA)).json())["totalCount"] == 0


async def test_a_metric_in_a_group_cannot_be_deleted(ld):
    await ld.post(GROUPS, json=group_body("g", ["visit", "cart"], kind="standard"), headers=BETA)
    await ld.post(GROUPS, json=group_body("h", ["cart"]), headers=BETA)
    message = await error_of(await ld.delete("/api/v2/metrics/proj/cart", headers=HEADERS), 409, "conflict")
    assert "g" in message and "h" in message
    assert (await ld.get("/api/v2/metrics/proj/cart", headers=HEADERS)).status == 200
    assert (await ld.delete(GROUPS + "/g", headers=BETA)).status == 204
    await error_of(await ld.delete("/api/v2/metrics/proj/cart", headers=HEADERS), 409, "conflict")
    await ld.patch(GROUPS + "/h", json=[{"op": "replace", "path": "/metrics",
                                        "value": [{"key": "buy", "nameInGroup": "b"}]}], headers=BETA)
    assert (await ld.delete("/api/v2/metrics/proj/cart", headers=HEADERS)).status == 204
    await error_of(await ld.get(GROUPS + "/g", headers=BETA), 404, "not_found")


async def test_a_duplicate_group_key_is_409(ld):
    assert (await ld.post(GROUPS, json=group_body("g", ["visit"]), headers=BETA)).status == 201
    await error_of(await ld.post(GROUPS, json=group_body("g", ["cart"]), headers=BETA), 409, "conflict")


async def test_the_dead_letter_list_starts_empty(ld):
    response = await ld.get("/internal-backstage/launchdarkly/dead-letters", headers=HEADERS)
    assert response.status == 200 and await response.json() == {"totalCount": 0, "items": []}
    await error_of(await ld.get("/internal-backstage/launchdarkly/dead-letters"), 401, "unauthorized")
