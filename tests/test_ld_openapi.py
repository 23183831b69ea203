"""/openapi.json describes the LaunchDarkly routes from the Structs that validate and encode them."""

from __future__ import annotations

import json

import jsonschema
import msgspec
import pytest

from proxy.app import openapi_document
from proxy.launchdarkly.schemas.groups import MetricGroupPost, MetricGroupRep
from proxy.launchdarkly.schemas.metrics import MetricPost, MetricRep
from tests.ld_support import BETA, HEADERS, LD_SETTINGS, custom_metric, group_body

DOCUMENT = json.loads(openapi_document())


def schema_of(ref: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**ref, "components": DOCUMENT["components"]})


@pytest.mark.parametrize(("path", "method", "request_struct", "status", "answer_struct"), [
    ("/api/v2/metrics/{projectKey}", "post", MetricPost, "201", MetricRep),
    ("/api/v2/projects/{projectKey}/metric-groups", "post", MetricGroupPost, "201", MetricGroupRep),
    ("/api/v2/metrics/{projectKey}/{metricKey}", "get", None, "200", MetricRep),
])
def test_bodies_are_the_structs(path, method, request_struct, status, answer_struct):
    op = DOCUMENT["paths"][path][method]
    assert op["x-token-kind"] == "launchdarkly"
    if request_struct is not None:
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        name = ref.rsplit("/", 1)[1]
        assert name == request_struct.__name__
        described = DOCUMENT["components"]["schemas"][name]["properties"]
        assert set(described) == {f.encode_name for f in msgspec.structs.fields(request_struct)}
    answer = op["responses"][status]["content"]["application/json"]["schema"]["$ref"]
    assert answer.endswith("/" + answer_struct.__name__)
    assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/LdError")


def test_deletes_answer_204_and_groups_need_the_beta_header():
    assert "204" in DOCUMENT["paths"]["/api/v2/metrics/{projectKey}/{metricKey}"]["delete"]["responses"]
    params = DOCUMENT["paths"]["/api/v2/projects/{projectKey}/metric-groups"]["get"]["parameters"]
    beta = next(p for p in params if p["name"] == "LD-API-Version")
    assert beta["in"] == "header" and beta["schema"]["enum"] == ["beta"]


async def test_what_the_proxy_answers_matches_the_document(make_client):
    ld = await make_client(launchdarkly=LD_SETTINGS)
    metric = await (await ld.post("/api/v2/metrics/p", json=custom_metric("m"), headers=HEADERS)).json()
    group = await (await ld.post("/api/v2/projects/p/metric-groups", json=group_body("g", ["m"]), headers=BETA)).json()
    listing = await (await ld.get("/api/v2/metrics/p", headers=HEADERS)).json()
    error = await (await ld.get("/api/v2/metrics/p/none", headers=HEADERS)).json()
    for body, name in ((metric, "MetricRep"), (group, "MetricGroupRep"), (listing, "MetricCollectionRep"),
                       (error, "LdError")):
        schema_of({"$ref": f"#/components/schemas/{name}"}).validate(body)
