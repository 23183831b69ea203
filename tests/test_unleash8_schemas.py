"""The wire against Unleash 8.2's own JSON Schemas (tests/fixtures/unleash-8.2, see its README).

- Every SDK payload the suite replays, and the bodies tests build by hand, validates against the
  inbound schema Unleash 8.2 checks it with; the few that do not are listed with the reason.
- 8.x shapes are accepted: sdkFlavor/sdkFlavorVersion, bodies without `environment`, and the bulk
  `seenTokens`.
"""

from __future__ import annotations

import json
import time
import warnings
from datetime import datetime, timezone

import pytest
from openapi_spec_validator import validate as validate_openapi

from proxy.state import STORE
from tests import unleash_schemas as schemas
from tests.support import CLIENT_TOKEN, FRONTEND_TOKEN, PAYLOADS, client_headers, recorded_requests

INBOUND = {
    "/api/client/metrics": "clientMetricsSchema",
    "/api/client/register": "clientApplicationSchema",
    "/api/client/metrics/bulk": "bulkMetricsSchema",
}
RECORDS = recorded_requests("register") + recorded_requests("metrics")
CURL = {"metrics.json": "/api/client/metrics", "register.json": "/api/client/register",
        "bulk.json": "/api/client/metrics/bulk"}

# Payloads that do not validate against Unleash 8.2, each with where and why. Unleash still
# answers them 202: its request validator (ajv, coerceTypes) turns `null` into "" for a string
# field before checking it. The recording's upstream_status shows 7.5.1 accepting them; see the
# README of tests/fixtures/unleash-8.2 for 8.2.
NODE_SDK_YGGDRASIL_NULL = {"['yggdrasilVersion']"}  # unleash-client 6.12.1 sends yggdrasilVersion: null
KNOWN_INVALID = {r["file"]: NODE_SDK_YGGDRASIL_NULL for r in RECORDS if r["file"].startswith("node-sdk-")}

# Fields the payloads carry that Unleash 8.2's schemas do not declare (Unleash ignores them).
UNDECLARED = {
    # Both 6.x SDKs send their connection id in the body too; Unleash reads the header.
    **{r["file"]: {"['connectionId']"} for r in RECORDS},
    # Unleash 8.2 removed `environment` from clientMetricsSchema (it comes from the token); the
    # curl body was written against 7.5.1, which listed it.
    "curl/metrics.json": {"['environment']"},
}


def now_iso(offset: float = 0.0) -> str:
    moment = datetime.fromtimestamp(time.time() + offset, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- 8.x bodies, used by several sections below ------------------------------------------------

FLAVOUR = {"sdkFlavor": "unleash-openfeature-python-provider", "sdkFlavorVersion": "0.4.0"}


def flavoured_register(app: str = "of-app") -> dict:
    return {"appName": app, "instanceId": f"{app}-1", "sdkVersion": "unleash-python-sdk:7.0.0", **FLAVOUR,
            "strategies": ["default", "flexibleRollout"], "started": now_iso(), "interval": 15}


def flavoured_metrics(app: str = "of-app", toggles: dict | None = None) -> dict:
    """A metrics body as an 8.x SDK sends it: sdkFlavor, no `environment`."""
    return {"appName": app, "instanceId": f"{app}-1", "sdkVersion": "unleash-python-sdk:7.0.0", **FLAVOUR,
            "bucket": {"start": now_iso(-60), "stop": now_iso(),
                       "toggles": toggles or {"of.flag": {"yes": 4, "no": 1, "variants": {"on": 4}}}}}


def edge_bulk(secret: str, app: str = "edge-app") -> dict:
    """A bulk body as Unleash Edge 20.4+ sends it, with the tokens it has seen."""
    row = {"appName": app, "environment": "development", "timestamp": now_iso()}
    return {
        "applications": [{"appName": app, "instanceId": f"{app}-1", "environment": "development",
                          "interval": 15, "started": now_iso(-600), "strategies": ["default"],
                          "sdkVersion": "unleash-node-sdk:7.0.0", "sdkType": "backend", **FLAVOUR,
                          "connectVia": [{"appName": "unleash-edge", "instanceId": "edge-1"}]}],
        "metrics": [{**row, "featureName": "edge.flag", "yes": 6, "no": 2, "variants": {}},
                    {**row, "featureName": "edge.variant", "yes": 3, "no": 0, "variants": {"a": 2, "b": 1}}],
        # Edge names each entry's app and environment (fields the 8.2 schema does not declare)
        "impactMetrics": [{"name": "edge_jobs", "help": "jobs run", "type": "counter", "appName": app,
                           "environment": "development", "samples": [{"value": 2, "labels": {"queue": "q1"}}]}],
        "seenTokens": [secret, CLIENT_TOKEN],
    }


# --- the fixture --------------------------------------------------------------------------------

def test_fixture_holds_the_pinned_export():
    document = schemas.components()
    assert document["info"]["version"] == schemas.VERSION
    assert set(document["components"]["schemas"]) == set(schemas.SCHEMA_NAMES)
    for name, schema in document["components"]["schemas"].items():
        exported = json.loads((schemas.FIXTURE_DIR / "schemas" / f"{name}.json").read_text())
        assert exported.pop("$id") == f"#/components/schemas/{name}"
        exported.pop("components")
        assert exported == schema, name
    # Unleash 8.1 removed custom metrics (#12517): the curl/custom.json body has no 8.2 schema.
    assert not list(schemas.FIXTURE_DIR.glob("schemas/custom*"))


def test_components_document_is_a_valid_openapi_3_0_document():
    validate_openapi(schemas.components())


def test_validation_honours_nullable_formats_and_refs():
    # nullable (OpenAPI 3.0) is honoured, and so is the $ref'd dateSchema with its date-time format.
    assert schemas.errors("clientMetricsSchema", {"appName": "a", "bucket": None}) == []
    assert schemas.error_paths("clientMetricsSchema", {"appName": "a", "yggdrasilVersion": None}) == {
        "['yggdrasilVersion']"}
    row = {"featureName": "f", "appName": "a", "environment": "development"}
    assert schemas.errors("clientMetricsEnvSchema", {**row, "timestamp": "2026-11-22T18:00:00.000Z"}) == []
    assert schemas.errors("clientMetricsEnvSchema", {**row, "timestamp": 1795371579}) == []
    for bad in ("2026-11-22 18:00", "2026-11-22T18:00:00", 1795371579.5):  # no zone; not an integer
        assert schemas.error_paths("clientMetricsEnvSchema", {**row, "timestamp": bad}) == {"['timestamp']"}
    assert schemas.error_paths("bulkMetricsSchema", {"applications": [], "metrics": [{**row, "yes": -1}]}) == {
        "['metrics'][0]['yes']"}
    assert schemas.undeclared("bulkMetricsSchema", {"applications": [], "metrics": [{**row, "extra": 1}]}) == {
        "['metrics'][0]['extra']"}


def test_the_export_step_reproduces_the_committed_files(tmp_path):
    """Only where the package is in the local npm cache: the suite never needs the network."""
    try:
        schemas.export(tmp_path, offline=True)
    except schemas.ExportUnavailable as exc:
        pytest.skip(f"cannot export offline here: {exc}")
    assert schemas.exported_files(tmp_path) == schemas.exported_files(schemas.FIXTURE_DIR)


# --- (a) what SDKs send, against the inbound schemas --------------------------------------------

def replayed_payloads() -> list[tuple[str, str, dict]]:
    """(file, schema, body) of every payload fixture the suite posts to the proxy."""
    found = [(r["file"], INBOUND[r["path"]], r["body"]) for r in RECORDS]
    for name, path in CURL.items():
        found.append((f"curl/{name}", INBOUND[path], json.loads((PAYLOADS / "curl" / name).read_text())))
    return found


@pytest.mark.parametrize("file, schema, body", replayed_payloads(), ids=lambda v: v if isinstance(v, str) else "")
def test_replayed_payload_validates_against_unleash_8_2(file, schema, body):
    assert schemas.error_paths(schema, body) == KNOWN_INVALID.get(file, set()), schemas.errors(schema, body)
    assert schemas.undeclared(schema, body) == UNDECLARED.get(file, set())


def test_known_invalid_payloads_were_accepted_by_unleash():
    records = {r["file"]: r for r in RECORDS}
    assert KNOWN_INVALID and set(KNOWN_INVALID) <= set(records)
    for file in KNOWN_INVALID:
        assert records[file]["upstream_status"] == 202, file
        assert records[file]["body"]["yggdrasilVersion"] is None


def hand_built_bodies() -> list[tuple[str, str, dict]]:
    """(name, schema, body) of the bodies the tests build by hand (and post as valid)."""
    from tests import forwarding, scrape_support, storage_support, test_impact_metrics, test_token_validation

    with warnings.catch_warnings():  # their `integration` mark is registered by their conftest
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        from tests.integration import test_proxy_to_unleash, test_unleash_direct

    impact = [
        test_impact_metrics.counter("requests", 3, route="/a"),
        test_impact_metrics.gauge("queue_depth", 7.5, pod=2),
        test_impact_metrics.histogram("latency", 5, 2.5, [(0.1, 2), (1, 4), ("+Inf", 5)]),
    ]
    bodies = [
        ("forwarding.metrics_body", "clientMetricsSchema", forwarding.metrics_body({"f": (3, 1)}, time.time())),
        ("scrape_support.metrics_body", "clientMetricsSchema", scrape_support.metrics_body("app", {"f": (1, 2)})),
        ("storage_support.metrics_body", "clientMetricsSchema",
         storage_support.metrics_body(time.time() // 3600 * 3600, ["f", "g"], 3)),
        ("storage_support.bulk_body", "bulkMetricsSchema", storage_support.bulk_body("development", "f", 4, 1)),
        ("test_token_validation.metrics_body", "clientMetricsSchema", test_token_validation.metrics_body()),
        ("test_impact_metrics.metrics_post", "clientMetricsSchema",
         test_impact_metrics.metrics_post(impact, {"f": {"yes": 1, "no": 0}})),
        ("test_unleash_direct.own_bulk_body", "bulkMetricsSchema", test_unleash_direct.own_bulk_body()),
        ("test_proxy_to_unleash.own_metrics_body", "clientMetricsSchema", test_proxy_to_unleash.own_metrics_body()),
        ("8.x register", "clientApplicationSchema", flavoured_register()),
        ("8.x metrics", "clientMetricsSchema", flavoured_metrics()),
        ("8.x bulk", "bulkMetricsSchema", edge_bulk("default:development.never-forwarded")),
    ]
    bodies += [(f"test_impact_metrics.{entry['type']}", "impactMetricsSchema", entry) for entry in impact]
    return bodies


@pytest.mark.parametrize("name, schema, body", hand_built_bodies(), ids=lambda v: v if isinstance(v, str) else "")
def test_hand_built_body_validates_against_unleash_8_2(name, schema, body):
    assert schemas.errors(schema, body) == []


# --- 8.x shapes in ----------------------------------------------------------------------------

async def test_8x_shapes_are_accepted_and_counted(client):
    cases = [
        ("/api/client/register", flavoured_register(), client_headers()),
        ("/api/client/metrics", flavoured_metrics(), client_headers()),
        ("/api/client/metrics/bulk", edge_bulk("default:development.in-process-secret"), client_headers()),
        ("/api/frontend/client/register", {"appName": "web", "sdkVersion": "unleash-client-js:3.8.0", **FLAVOUR},
         client_headers(FRONTEND_TOKEN)),
        ("/api/frontend/client/metrics", flavoured_metrics("web", {"fe.flag": {"yes": 1, "no": 0}}),
         client_headers(FRONTEND_TOKEN)),
    ]
    for path, body, headers in cases:
        resp = await client.post(path, json=body, headers=headers)
        assert resp.status == 202, (path, await resp.text())
    totals = {(app, flag): (yes, no) for _env, app, flag, yes, no in await client.app[STORE].totals()}
    assert totals == {("of-app", "of.flag"): (4, 1), ("edge-app", "edge.flag"): (6, 2),
                      ("edge-app", "edge.variant"): (3, 0), ("web", "fe.flag"): (1, 0)}


async def test_a_flavour_that_is_not_text_is_refused_like_any_mistyped_field(client):
    body = {**flavoured_metrics(), "sdkFlavor": 7}
    resp = await client.post("/api/client/metrics", json=body, headers=client_headers())
    assert resp.status == 400
    assert (await resp.json())["details"][0]["path"] == "sdkFlavor"
