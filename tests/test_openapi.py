"""/openapi.json: a valid OpenAPI document, covering every route, whose schemas accept real SDK bodies."""

from __future__ import annotations

import json
import time

import jsonschema
import msgspec
import pytest
from openapi_spec_validator import validate

from proxy.app import create_app
from proxy.launchdarkly.api.events import ERROR_PREFIXES as EVENT_PREFIXES
from proxy.unleash.schemas.client import ClientMetrics
from tests.support import PAYLOADS, admin_headers, client_headers, recorded_requests


def _body_schema(document: dict, name: str) -> jsonschema.Draft202012Validator:
    # The component refs resolve against this root, as they do inside the document.
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def _request_schema_name(document: dict, path: str) -> str:
    ref = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return ref.rsplit("/", 1)[1]


@pytest.fixture
async def document(client) -> dict:
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    return await response.json()


async def test_the_document_is_valid_openapi(document):
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")


def _routes(app) -> set[tuple[str, str]]:
    registered = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD beside every GET by itself
        if route.method == "*":
            continue  # the catch-all that answers unknown paths with 404/405 (api/routing.py)
        registered.add((route.method.lower(), route.resource.canonical))
    return registered


def _documented(document: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, item in document["paths"].items() for method in item}


async def test_every_route_of_the_app_is_documented(client, document):
    assert _routes(client.app) - _documented(document) == set(), "routes without an entry in /openapi.json"
    assert _documented(document) - _routes(client.app) == set(), "documented operations the app does not serve"


async def test_a_route_added_without_documentation_is_noticed(make_settings, clock, document):
    async def undocumented(request):
        return None

    app = create_app(make_settings(), clock=clock)
    app.router.add_post("/api/client/something-new", undocumented)
    assert _routes(app) - _documented(document) == {("post", "/api/client/something-new")}


async def test_operations_say_their_token_and_error_body(document):
    for path, item in document["paths"].items():
        for method, op in item.items():
            kind = op["x-token-kind"]
            # LaunchDarkly's routes answer its own error body {code, message, id}; its SDK event routes
            # Relay's {"message": ...}.
            body = "LdError" if kind == "launchdarkly" else "ErrorBody"
            if path.startswith(EVENT_PREFIXES):
                body = "RelayError"
            error_ref = {"$ref": "#/components/schemas/" + body}
            if kind is not None:
                assert op["security"] == [{"apiKey": []}], (method, path)
                for status in ("401", "403") if not kind.startswith("launchdarkly") else ("401",):
                    assert op["responses"][status]["content"]["application/json"]["schema"] == error_ref
            for status, answer in op["responses"].items():
                if status.startswith("4"):
                    assert answer["content"]["application/json"]["schema"] == error_ref, (method, path, status)
    assert document["components"]["securitySchemes"]["apiKey"] == {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": document["components"]["securitySchemes"]["apiKey"]["description"],
    }
    ingest = document["paths"]["/api/client/metrics"]["post"]["responses"]
    assert {"202", "400", "401", "403", "413", "415", "503"} <= set(ingest)
    raw = document["paths"]["/api/admin/client-metrics/features/{name}/raw"]["get"]["parameters"]
    assert [p["name"] for p in raw] == ["name", "hoursBack"]


async def test_the_struct_fields_are_the_schema(document):
    described = document["components"]["schemas"]["ClientMetrics"]
    assert set(described["properties"]) == {f.name for f in msgspec.structs.fields(ClientMetrics)}
    assert described["required"] == ["appName"]
    # The raw impactMetrics field documents what the handler decodes it into, and admits any JSON
    # as the handler does (a malformed entry is dropped, the post still counts).
    impact = described["properties"]["impactMetrics"]
    assert impact["anyOf"] == [{"type": "array", "items": {"$ref": "#/components/schemas/ImpactMetric"}}, {}]


@pytest.mark.parametrize("kind", ["metrics", "register"])
async def test_recorded_sdk_bodies_validate(document, kind):
    records = recorded_requests(kind)
    assert records
    for record in records:
        validator = _body_schema(document, _request_schema_name(document, record["path"]))
        errors = [e.message for e in validator.iter_errors(record["body"])]
        assert errors == [], record["file"]


@pytest.mark.parametrize("name, path", [
    ("bulk.json", "/api/client/metrics/bulk"),
    ("custom.json", "/api/client/metrics/custom"),
    ("metrics.json", "/api/client/metrics"),
    ("register.json", "/api/client/register"),
])
async def test_curl_bodies_validate(document, name, path):
    body = json.loads((PAYLOADS / "curl" / name).read_text())
    validator = _body_schema(document, _request_schema_name(document, path))
    assert [e.message for e in validator.iter_errors(body)] == []


async def test_bodies_the_proxy_refuses_fail_the_schema_too(client, document):
    validator = _body_schema(document, "ClientMetrics")
    for bad in (
        {"bucket": {"start": 0, "stop": 0, "toggles": {}}},  # no appName
        {"appName": "a", "bucket": {"start": 0, "stop": 0, "toggles": {"f": {"yes": -1, "no": 0}}}},
        {"appName": "", "bucket": None},
        {"appName": "a", "bucket": {"start": 1e20, "stop": 0}},
        {"appName": "a", "bucket": {"start": 0, "stop": 10**18}},  # epoch ms beyond the year 9999
    ):
        assert list(validator.iter_errors(bad)), bad
        response = await client.post("/api/client/metrics", json=bad, headers=client_headers())
        assert response.status == 400, bad


async def test_the_backstage_answers_match_their_structs(client, document):
    schemas = document["components"]["schemas"]
    health = await (await client.get("/internal-backstage/health")).json()
    ready = await client.get("/internal-backstage/ready")
    flush = await client.post("/internal-backstage/flush", headers=admin_headers())
    assert health == {"status": "OK"}
    jsonschema.validate(health, {"$ref": "#/components/schemas/Health", "components": {"schemas": schemas}})
    assert ready.status == 200 and await ready.json() == {"status": "READY"}
    assert flush.status == 409  # no [upstream] in these settings: documented as 409 with ErrorBody
    _body_schema(document, "ErrorBody").validate(await flush.json())


def _bounds(schema: dict) -> dict:
    return {k: schema[k] for k in ("minLength", "maxLength", "minimum", "maximum") if k in schema}


def _optional(schema: dict) -> dict:
    """The non-null alternative of an optional field."""
    return next(alt for alt in schema.get("anyOf", [schema]) if alt.get("type") != "null")


async def test_the_limits_are_in_the_document(document):
    """The bounds the wire Structs enforce (proxy/unleash/schemas/limits.py, docs/limits.md) are what
    the document says, as msgspec derives it from the same Annotated types."""
    schemas = document["components"]["schemas"]
    name, text = {"minLength": 1, "maxLength": 100}, {"maxLength": 255}
    assert _bounds(schemas["Bucket"]["properties"]["toggles"]["propertyNames"]) == name
    assert _bounds(_optional(schemas["ToggleUsage"]["properties"]["variants"])["propertyNames"]) == name
    bulk_row = schemas["BulkMetric"]["properties"]
    assert _bounds(bulk_row["featureName"]) == name
    assert _bounds(bulk_row["environment"]) == name
    assert _bounds(bulk_row["appName"]) == {"minLength": 1, **text}
    assert _bounds(_optional(bulk_row["variants"])["propertyNames"]) == name
    registration = schemas["ClientRegistration"]["properties"]
    assert _bounds(registration["interval"]) == {"minimum": 0, "maximum": 4_294_967_295}
    assert _bounds(_optional(registration["strategies"]["items"])) == {"maxLength": 100}
    assert _bounds(_optional(registration["projects"])["items"]) == name
    for struct in ("ClientMetrics", "ClientRegistration", "FrontendRegistration"):
        properties = schemas[struct]["properties"]
        assert _bounds(_optional(properties["instanceId"])) == text, struct
        assert _bounds(_optional(properties["sdkVersion"])) == text, struct
    application = schemas["BulkApplication"]["properties"]
    assert _bounds(application["instanceId"]) == text
    assert _bounds(_optional(application["interval"])) == {"minimum": 0, "maximum": 4_294_967_295}
    assert _bounds(schemas["ConnectVia"]["properties"]["instanceId"]) == text
    custom = schemas["CustomMetric"]["properties"]
    assert _bounds(custom["name"]) == {"minLength": 1, **text}
    assert _bounds(_optional(custom["labels"])["propertyNames"]) == {"minLength": 1, **text}
    assert _bounds(_optional(custom["labels"])["additionalProperties"]) == text
    assert _bounds(schemas["ImpactMetric"]["properties"]["name"]) == {"minLength": 1, **text}
    # the time rule is said where the time is sent
    assert "48 hours" in schemas["Bucket"]["properties"]["stop"]["description"]
    assert "48 hours" in _optional(bulk_row["timestamp"])["description"]
    for path in ("/api/client/metrics", "/api/client/metrics/bulk"):
        reason = document["paths"][path]["post"]["responses"]["415"]["description"]
        assert "Content-Encoding" in reason


NOW_MS = int(time.time() * 1000)  # near the clock fixture's instant: the bucket times are not what is wrong


@pytest.mark.parametrize("schema, path, body, field", [
    ("ClientMetrics", "/api/client/metrics",
     {"appName": "a", "bucket": {"start": NOW_MS, "stop": NOW_MS, "toggles": {"f" * 101: {"yes": 1}}}},
     "bucket.toggles"),
    ("ClientMetrics", "/api/client/metrics",
     {"appName": "a", "bucket": {"start": NOW_MS, "stop": NOW_MS, "toggles": {"f": {"variants": {"": 1}}}}},
     "bucket.toggles['f'].variants"),
    ("ClientMetrics", "/api/client/metrics", {"appName": "a", "instanceId": "i" * 256}, "instanceId"),
    ("ClientRegistration", "/api/client/register",
     {"appName": "a", "interval": 2**64, "started": 0, "strategies": []}, "interval"),
    ("ClientRegistration", "/api/client/register",
     {"appName": "a", "interval": 1, "started": 0, "strategies": ["s" * 101]}, "strategies[0]"),
    ("BulkMetrics", "/api/client/metrics/bulk",
     {"applications": [], "metrics": [{"featureName": "", "appName": "a", "environment": "development"}]},
     "metrics[0].featureName"),
    ("CustomMetrics", "/api/client/metrics/custom",
     {"metrics": [{"name": "m", "value": 1, "labels": {"l": "v" * 256}}]}, "metrics[0].labels['l']"),
])
async def test_a_body_over_a_documented_limit_fails_the_schema_and_the_proxy(client, document, schema, path, body,
                                                                              field):
    assert list(_body_schema(document, schema).iter_errors(body)), body
    response = await client.post(path, json=body, headers=client_headers())
    assert response.status == 400, await response.text()
    assert (await response.json())["details"][0]["path"] == field
