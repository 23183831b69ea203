"""The wire against Unleash 8.2's own JSON Schemas (tests/fixtures/unleash-8.2, see its README)."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate as validate_openapi

from tests import unleash_schemas as schemas


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
