"""The LaunchDarkly routes in /openapi.json: the route-level facts; every body shape comes from the
Structs in proxy/launchdarkly/schemas/."""

from __future__ import annotations

from typing import Any

from proxy.api.openapi import Operation, query_param
from proxy.launchdarkly.api import events
from proxy.launchdarkly.api.admin import PATH as DEAD_LETTERS_PATH
from proxy.launchdarkly.api.listing import DEFAULT_LIMIT, MAX_FILTER_LENGTH, MAX_LIMIT, MAX_PARAMETER_LENGTH
from proxy.launchdarkly.api.metric_events import MAX_HOURS_BACK
from proxy.launchdarkly.api.metric_events import PATH as METRIC_EVENTS_PATH
from proxy.launchdarkly.schemas.common import KEY_PATTERN, MAX_KEY_LENGTH, DeadLetterList, JsonPatch, LdError
from proxy.launchdarkly.schemas.events import DiagnosticEvent, EventList, ImportList, MetricEventCounts, RelayError
from proxy.launchdarkly.schemas.groups import MetricGroupCollectionRep, MetricGroupPost, MetricGroupRep
from proxy.launchdarkly.schemas.metrics import MetricCollectionRep, MetricPost, MetricRep

TOKEN = "launchdarkly"
TOKEN_ERRORS = {401: "no access token, or one not in [launchdarkly] access_tokens"}
REASONS = {
    403: "a metric-group call without `LD-API-Version: beta`",
    404: "no such project, metric or metric group",
    409: "the key exists (conflict), a `test` operation failed (optimistic_locking_error), or the metric is "
         "used by a metric group (conflict)",
    429: "LaunchDarkly's rate limit, relayed with its Retry-After and X-Ratelimit-* headers",
    503: "the store cannot write now; see Retry-After",
}
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": KEY_PATTERN}
BETA = {"name": "LD-API-Version", "in": "header", "required": True, "schema": {"type": "string", "enum": ["beta"]},
        "description": "metric groups are a beta resource (not required with require_beta_header = false)"}
API_VERSION = {"name": "LD-API-Version", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "LaunchDarkly's API version, e.g. 20240415; relayed upstream"}
PAGE = [
    query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
                "items per page (default 20, at most 50: more is a 400)"),
    query_param("offset", {"type": "integer", "minimum": 0, "default": 0}, "items skipped"),
]


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": KEY_SCHEMA}


def _text(name: str, description: str, limit: int = MAX_PARAMETER_LENGTH) -> dict[str, Any]:
    return query_param(name, {"type": "string", "maxLength": limit}, description)


PROJECT = _path("projectKey", "the project key")
METRIC = _path("metricKey", "the metric key")
GROUP = _path("metricGroupKey", "the metric group key")
METRICS = "/api/v2/metrics/{projectKey}"
METRIC_PATH = METRICS + "/{metricKey}"
GROUPS = "/api/v2/projects/{projectKey}/metric-groups"
GROUP_PATH = GROUPS + "/{metricGroupKey}"
WRITE_ERRORS = (404, 409, 413, 415, 429, 503)


def _op(method: str, path: str, summary: str, errors: tuple[int, ...], **kwargs: Any) -> Operation:
    # 401 with auth = "open" too: a LaunchDarkly call without any token is refused in every mode.
    return Operation(method, path, summary, TOKEN, error_body=LdError, token_errors=TOKEN_ERRORS, reasons=REASONS,
                     errors=tuple(sorted({401, 404, *errors})), **kwargs)


OPERATIONS = [
    _op("get", METRICS, "List a project's metrics (LaunchDarkly)", answer=MetricCollectionRep, parameters=[
        PROJECT, API_VERSION, *PAGE,
        _text("sort", "createdAt or name; `-` first for descending"),
        _text("filter", "clauses `field op value` joined by ` and ` or commas", MAX_FILTER_LENGTH),
        _text("expand", "experimentCount, metricGroupCount")], errors=(429, 503)),
    _op("post", METRICS, "Create a metric (LaunchDarkly)", request=MetricPost, answer=MetricRep, success=201,
        parameters=[PROJECT, API_VERSION], errors=WRITE_ERRORS),
    _op("get", METRIC_PATH, "Get a metric (LaunchDarkly)", answer=MetricRep, parameters=[
        PROJECT, METRIC, API_VERSION, _text("expand", "experiments, experimentCount, metricGroups, metricGroupCount"),
        _text("versionId", "a version of the metric")], errors=(404, 429, 503)),
    _op("patch", METRIC_PATH, "Update a metric with a JSON Patch (LaunchDarkly)", request=JsonPatch,
        answer=MetricRep, parameters=[PROJECT, METRIC, API_VERSION], errors=WRITE_ERRORS),
    _op("delete", METRIC_PATH, "Delete a metric (LaunchDarkly)", success=204,
        parameters=[PROJECT, METRIC, API_VERSION], errors=(404, 409, 429, 503)),
    _op("get", GROUPS, "List a project's metric groups (LaunchDarkly, beta)", answer=MetricGroupCollectionRep,
        parameters=[PROJECT, BETA, *PAGE, _text("sort", "name, createdAt or connectionCount; `-` for descending"),
                    _text("filter", "clauses `field op value` joined by ` and ` or commas", MAX_FILTER_LENGTH),
                    _text("expand", "reserved; changes nothing")], errors=(403, 429, 503)),
    _op("post", GROUPS, "Create a metric group (LaunchDarkly, beta)", request=MetricGroupPost, answer=MetricGroupRep,
        success=201, parameters=[PROJECT, BETA], errors=(403, *WRITE_ERRORS)),
    _op("get", GROUP_PATH, "Get a metric group (LaunchDarkly, beta)", answer=MetricGroupRep,
        parameters=[PROJECT, GROUP, BETA, _text("expand", "experiments, experimentCount")], errors=(403, 404, 429, 503)),
    _op("patch", GROUP_PATH, "Update a metric group with a JSON Patch (LaunchDarkly, beta)",
        request=JsonPatch, answer=MetricGroupRep, parameters=[PROJECT, GROUP, BETA],
        errors=(403, *WRITE_ERRORS)),
    _op("delete", GROUP_PATH, "Delete a metric group (LaunchDarkly, beta)", success=204,
        parameters=[PROJECT, GROUP, BETA], errors=(403, 404, 429, 503)),
    _op("get", DEAD_LETTERS_PATH, "Queued LaunchDarkly writes the upstream refused", answer=DeadLetterList,
        parameters=[query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                                "the newest this many")], errors=(503,)),
]


# --- SDK events and metric imports (Relay's paths; errors in Relay's {"message": ...}) ------------

SDK_TOKEN_ERRORS = {401: "no SDK or mobile key in the Authorization header",
                    403: "with auth = \"tokens\": a key not in [launchdarkly.environments.*]"}
EVENT_REASONS = {
    400: "the body is empty, not JSON, not an array, or an event has no string `kind`; the message names the "
         "event's index",
    403: "the client-side ID is not configured (auth = \"tokens\")",
    404: "a project or environment key no resource could have",
    413: "the body is larger than max_body_size (after decompression)",
    503: "the store cannot write now; nothing was stored; see Retry-After",
}
EVENT_HEADERS = [
    {"name": "X-LaunchDarkly-Event-Schema", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "kept with the payload and sent upstream with it"},
    {"name": "X-LaunchDarkly-Payload-ID", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "a repeat from the same credential within idempotency_window is answered 202 and stored once"},
    {"name": "X-LaunchDarkly-Tags", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "kept with the payload and sent upstream with it"},
]
CLIENT_SIDE_ID = {"name": "clientSideId", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "the environment's client-side ID"}


def _event_op(path: str, summary: str, request: object, token: str | None, parameters: list | None = None,
              errors: tuple[int, ...] = (413, 415, 503), **kwargs: Any) -> Operation:
    return Operation("post", path, summary, token, request=request, parameters=[*(parameters or []), *EVENT_HEADERS],
                     error_body=RelayError, token_errors=SDK_TOKEN_ERRORS, reasons=EVENT_REASONS,
                     errors=tuple(sorted({400, *errors})), **kwargs)


def _sdk_ops() -> list[Operation]:
    ops = []
    for path, upstream in {**events.SERVER_ROUTES, **events.MOBILE_ROUTES}.items():
        diagnostic = upstream.endswith("diagnostic")
        server = path in events.SERVER_ROUTES
        who = "server-side SDK (SDK key)" if server else "mobile SDK (mobile key)"
        ops.append(_event_op(path, f"{'Diagnostic event' if diagnostic else 'Analytics events'} of a {who}; "
                                   f"sent on to {{events_url}}{upstream}",
                             DiagnosticEvent if diagnostic else EventList,
                             "launchdarkly-sdk" if server else "launchdarkly-mobile",
                             errors=(401, 403, 413, 415, 503)))
    for path, diagnostic in ((events.BROWSER_BULK, False), (events.BROWSER_DIAGNOSTIC, True)):
        ops.append(_event_op(path, f"{'Diagnostic event' if diagnostic else 'Analytics events'} of a browser SDK",
                             DiagnosticEvent if diagnostic else EventList, None, [CLIENT_SIDE_ID],
                             errors=(403, 413, 415, 503)))
        ops.append(Operation("options", path, "CORS preflight of the browser event route (answered as Relay does)",
                             None, parameters=[CLIENT_SIDE_ID], error_body=RelayError,
                             answer={"type": "string", "description": "empty"}, answer_media="text/plain"))
    ops.append(_event_op(events.IMPORT_PATH, "Import metric events (custom events of one environment)", ImportList,
                         TOKEN, [_path("projectKey", "the project key"), _path("environmentKey", "the environment key")],
                         errors=(401, 404, 413, 415, 503)))
    ops.append(_op("get", METRIC_EVENTS_PATH, "The custom events counted against a metric, per hour and environment "
                                              "(the proxy's own extension)", answer=MetricEventCounts,
                   parameters=[PROJECT, METRIC, query_param(
                       "hoursBack", {"type": "integer", "minimum": 1, "maximum": MAX_HOURS_BACK, "default": 24},
                       "hours back from now, the current one included")], errors=(400, 404, 503)))
    return ops


OPERATIONS += _sdk_ops()
