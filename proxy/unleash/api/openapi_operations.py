"""What /openapi.json says about each route: token kind, parameters, request and answer types.

Only the route-level facts live here; every body shape comes from the msgspec Structs in
proxy/unleash/schemas (proxy/api/openapi.py turns them into JSON Schema), so a field is never listed twice.
"""

from __future__ import annotations

from typing import Any

from proxy.api.openapi import NAME_SCHEMA, PROMETHEUS_TEXT, Operation, path_param, query_param
from proxy.api.params import MAX_INTEGER
from proxy.api.schemas.backstage import FlushResult
from proxy.unleash.api.read_answers import APPS_TOTAL_HEADER, FLAGS_TOTAL_HEADER
from proxy.unleash.schemas.client import BulkMetrics, ClientMetrics, ClientRegistration, FrontendRegistration
from proxy.unleash.schemas.custom import CustomMetrics
from proxy.unleash.schemas.features import ClientFeatures, FeatureFlag
from proxy.unleash.schemas.impact import ImpactMetric
from proxy.unleash.schemas.reads import (
    AdminApplication,
    ApplicationOverview,
    Applications,
    ApplicationsPage,
    ClientApplication,
    EnvironmentInstances,
    FeatureSummary,
    FeatureToggleWindows,
    RawUsage,
    SeenApp,
    SeenToggles,
)
from proxy.unleash.store.admin_reads import SORT_COLUMNS

_INGEST_ERRORS = (400, 413, 415, 503)
_APP_NAME = path_param("appName", "the application's name (URL-decoded)")
_FLAG_NAME = path_param("name", "the feature flag's name")
_FEATURE_FILTERS = [
    query_param("project", {"type": "array", "items": {"type": "string"}},
                "only features of these projects (repeatable)", style="form", explode=True),
    query_param("namePrefix", {"type": "string"}, "only features whose name starts with this"),
    query_param("tag", {"type": "array", "items": {"type": "string", "pattern": "^[^:]+:.+$"}},
                "only features carrying one of these tags, as type:value (repeatable)", style="form", explode=True),
]
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "a key already accepted from the same environment is answered 202 and not counted again",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

OPERATIONS: list[Operation] = [
    Operation("post", "/api/client/metrics", "Usage counts of one SDK instance", "client",
              ClientMetrics, errors=_INGEST_ERRORS),
    Operation("post", "/api/client/register", "Registration of an SDK instance", "client",
              ClientRegistration, errors=_INGEST_ERRORS),
    Operation("post", "/api/client/metrics/bulk", "Usage counts and instances of many apps (Unleash Edge)",
              "client", BulkMetrics, parameters=[_IDEMPOTENCY_KEY], errors=_INGEST_ERRORS),
    Operation("post", "/api/frontend/client/metrics", "Usage counts of a frontend SDK", "frontend",
              ClientMetrics, errors=_INGEST_ERRORS),
    Operation("post", "/api/frontend/client/register", "Registration of a frontend SDK", "frontend",
              FrontendRegistration, errors=_INGEST_ERRORS),
    Operation("post", "/api/client/metrics/custom", "Custom metrics, latest value per series", "client",
              CustomMetrics, errors=_INGEST_ERRORS),
    Operation("get", "/api/client/features", "Feature flag definitions for SDKs", "client",
              answer=ClientFeatures, parameters=_FEATURE_FILTERS, errors=(400, 503), not_modified=True),
    Operation("get", "/api/client/features/{name}", "One feature flag definition", "client",
              answer=FeatureFlag, parameters=[_FLAG_NAME, *_FEATURE_FILTERS], errors=(400, 404, 503),
              not_modified=True),
    Operation("get", "/api/client/metrics/feature-toggles", "lastHour and lastMinute counts per flag", "admin",
              answer=FeatureToggleWindows),
    Operation("get", "/api/client/seen-toggles", "Flags each app used in the last hour", "admin",
              answer=list[SeenToggles], answer_headers={APPS_TOTAL_HEADER: {
                  "description": "present only when the answer stopped at read_max_answer_bytes: how many apps there are",
                  "schema": {"type": "integer", "minimum": 0}}}),
    Operation("get", "/api/client/applications", "Apps seen in the last two days", "admin", answer=Applications,
              parameters=[query_param("strategyName", NAME_SCHEMA, "only apps that registered this strategy")],
              errors=(400,)),
    Operation("get", "/api/client/applications/{appName}", "One app's instances, strategies, seen flags",
              "admin", answer=ClientApplication, parameters=[_APP_NAME], errors=(400, 404)),
    Operation("get", "/api/client/seen-apps", "The apps that used each flag, the first flags by name",
              "admin", answer=dict[str, list[SeenApp]], answer_headers={FLAGS_TOTAL_HEADER: {
                  "description": "present only when the answer does not list every flag (read_max_flags, "
                                 "read_max_answer_bytes): how many there are",
                  "schema": {"type": "integer", "minimum": 0}}}),
    Operation("get", "/api/admin/metrics/applications", "A page of applications (Unleash 7 shape)", "admin",
              answer=ApplicationsPage, errors=(400,), parameters=[
                  query_param("query", NAME_SCHEMA, "only apps whose name contains this"),
                  query_param("offset", {"type": "integer", "minimum": 0, "maximum": MAX_INTEGER}, "apps to skip (empty: 0)",
                              allowEmptyValue=True),
                  query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_INTEGER},
                              "page size; above 1000 is capped (empty: 1000)", allowEmptyValue=True),
                  query_param("sortBy", {"type": "string", "enum": list(SORT_COLUMNS)}, "sort column"),
                  query_param("sortOrder", {"type": "string", "enum": ["asc", "desc"]}, "sort direction"),
              ]),
    Operation("get", "/api/admin/metrics/applications/{appName}", "One application (Unleash 7 shape)", "admin",
              answer=AdminApplication, parameters=[_APP_NAME], errors=(400, 404)),
    Operation("get", "/api/admin/metrics/applications/{appName}/overview", "One application's overview",
              "admin", answer=ApplicationOverview, parameters=[_APP_NAME], errors=(400, 404)),
    Operation("get", "/api/admin/metrics/instances/{appName}/environment/{environment}",
              "Instances of an app in one environment, last 24 h", "admin", answer=EnvironmentInstances, errors=(400,),
              parameters=[_APP_NAME, path_param("environment", "the environment's name")]),
    Operation("get", "/api/admin/client-metrics/features/{name}/raw", "Hourly usage of a flag, zero-filled",
              "admin", answer=RawUsage, errors=(400,), parameters=[
                  _FLAG_NAME,
                  # Not bounded in the schema: outside 1..48 is no error but the default, as in Unleash.
                  query_param("hoursBack", {"type": "integer", "maximum": MAX_INTEGER},
                              "hours of history, 1..48; default 24, also used for a value outside 1..48",
                              allowEmptyValue=True),
              ]),
    Operation("get", "/api/admin/client-metrics/features/{name}", "Last-hour usage and apps of a flag",
              "admin", answer=FeatureSummary, parameters=[_FLAG_NAME], errors=(400,)),
    Operation("get", "/internal-backstage/impact/metrics", "Merged impact metrics, Prometheus text", None,
              answer={"type": "string"}, answer_media=PROMETHEUS_TEXT),
    Operation("post", "/internal-backstage/flush", "Send pending counts upstream now", "admin",
              answer=FlushResult, errors=(409,)),
]

# `msgspec.Raw` fields are decoded later, entry by entry; this is what they hold on the wire.
RAW_FIELD_TYPES: dict[str, Any] = {"impactMetrics": list[ImpactMetric]}
