"""GET /openapi.json: an OpenAPI 3.1 document generated from the msgspec wire Structs.

The document is built once when the app is created and served as cached bytes. Body shapes come
from `msgspec.json.schema_components` over the Structs the handlers decode and encode, so the
document cannot drift from what the handlers accept; the route-level facts are in
each room's `OPERATIONS` (proxy/unleash/api/openapi_operations.py).
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from proxy.api.params import MAX_NAME_LENGTH
from proxy.api.schemas.errors import ErrorBody

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"
SECURITY_SCHEME = "apiKey"
OPENAPI_BYTES = web.AppKey("openapi_bytes", bytes)

RAW_FIELD_NOTE = (
    "What SDKs send here. Accepted leniently: an entry that does not match, or a value that is no "
    "list, is dropped and counted (impact_metric_invalid) and the post's usage counts still stored."
)

JSON_OBJECT: dict[str, Any] = {"type": "object"}  # /openapi.json itself: an OpenAPI document
PROMETHEUS_TEXT = "text/plain"

NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_NAME_LENGTH}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": NAME_SCHEMA}


def query_param(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema, **extra}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    token: str | None  # "client", "frontend", "admin"; None: no token needed
    request: type | None = None  # the msgspec Struct of the JSON request body
    answer: Any = None  # a Struct, a container of Structs, a plain JSON Schema, or None: 202 empty
    answer_media: str = "application/json"
    parameters: list[dict[str, Any]] = field(default_factory=list)
    errors: tuple[int, ...] = ()  # statuses answered with ErrorBody beyond the token ones
    other_answers: dict[int, type] = field(default_factory=dict)  # non-2xx answers that are no ErrorBody
    not_modified: bool = False  # answers 304 to a matching If-None-Match
    answer_headers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> OpenAPI header object
    # The success status: None is 200 with `answer`, or 202 without; 201 or 204 when the vendor says so.
    success: int | None = None
    error_body: type = ErrorBody  # the Struct of this operation's error answers (a vendor's own shape)
    token_errors: dict[int, str] | None = None  # what 401/403 mean here, when not the Unleash tokens'
    reasons: dict[int, str] = field(default_factory=dict)  # what an error status means here, beyond the usual


_TOKEN_ERRORS = {
    401: "no API token in the Authorization header",
    403: "the token is unknown, or of another kind than this endpoint needs",
}
_ERROR_REASONS = {
    400: "bad body or parameter; details[0].path names it",
    404: "not found",
    409: "not possible in this configuration",
    413: "the body is larger than max_body_size (after decompression)",
    415: "the Content-Type is not JSON, or the Content-Encoding not gzip, deflate or identity",
    503: "the store cannot write, or an upstream is needed and unreachable; see Retry-After",
}


def _described(struct: type, raw_field_types: dict[str, Any]) -> type:
    """`struct`, or a copy whose `msgspec.Raw` fields carry the type they hold on the wire.

    msgspec cannot describe a Raw field (its default does not encode); the copy keeps the name,
    docstring and every other field of the original, so the components still say `ClientMetrics`.
    """
    infos = msgspec.structs.fields(struct)
    if not any(info.type is msgspec.Raw for info in infos):
        return struct
    fields: list[tuple[Any, ...]] = []
    for info in infos:
        if info.type is msgspec.Raw:
            if info.name not in raw_field_types:
                raise TypeError(f"{struct.__name__}.{info.name} is raw JSON without a documented type")
            fields.append((info.name, raw_field_types[info.name] | msgspec.UnsetType, msgspec.UNSET))
        elif info.required:
            fields.append((info.name, info.type))
        else:
            default = info.default if info.default is not msgspec.NODEFAULT else msgspec.field(
                default_factory=info.default_factory)
            fields.append((info.name, info.type, default))
    return msgspec.defstruct(struct.__name__, fields, kw_only=True, namespace={"__doc__": struct.__doc__},
                             module=struct.__module__)


def _loosen_raw_fields(components: dict[str, Any], structs: list[type]) -> None:
    """A raw field's schema says what it should hold, yet admits any JSON, as the handler does."""
    for struct in structs:
        for info in msgspec.structs.fields(struct):
            if info.type is msgspec.Raw:
                properties = components[struct.__name__]["properties"]
                properties[info.name] = {"anyOf": [properties[info.name], {}], "description": RAW_FIELD_NOTE}


def _schema_ref(struct: type) -> dict[str, Any]:
    return {"$ref": REF.format(name=struct.__name__)}


def _schema(shape: Any) -> dict[str, Any]:
    """A plain JSON Schema as it is; a Struct as a reference to its component; a container of
    Structs (`list[SeenToggles]`) as msgspec describes it, referring to the components."""
    if isinstance(shape, dict):
        return shape
    if isinstance(shape, type):
        return _schema_ref(shape)
    return msgspec.json.schema_components([shape], ref_template=REF)[0][0]


def _content(answer: Any, media: str) -> dict[str, Any]:
    return {media: {"schema": _schema(answer)}}


def _error(reason: str, body: type = ErrorBody) -> dict[str, Any]:
    return {"description": reason, "content": _content(body, "application/json")}


def _responses(op: Operation, tokens: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.success == 204:
        responses["204"] = {"description": "done; empty body"}
    elif op.answer is None:
        responses["202"] = {"description": "committed to the local store; empty body"}
    else:
        status = str(op.success or 200)
        responses[status] = {"description": "OK", "content": _content(op.answer, op.answer_media)}
        if op.answer_headers:
            responses[status]["headers"] = op.answer_headers
    if op.not_modified:
        responses["304"] = {"description": "the If-None-Match ETag still matches; empty body"}
    # A token op may also answer 503 while an upstream that must validate a new token is unreachable.
    token_errors = _TOKEN_ERRORS if op.token_errors is None else op.token_errors
    statuses = set(op.errors) | ({*token_errors, 503} if op.token and tokens else set())
    if op.request is not None or op.parameters:
        statuses.add(400)
    for status in sorted(statuses):
        responses[str(status)] = _error(op.reasons.get(status) or token_errors.get(status) or _ERROR_REASONS[status],
                                       op.error_body)
    for status, struct in op.other_answers.items():
        responses[str(status)] = {"description": struct.__doc__ or struct.__name__,
                                  "content": _content(struct, "application/json")}
    return responses


def _operation(op: Operation, tokens: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": f"{op.method}{op.path}",
        "summary": op.summary,
        "security": [{SECURITY_SCHEME: []}] if op.token and tokens else [],
        "x-token-kind": op.token,  # which of client_tokens / frontend_tokens / admin_tokens
        "responses": _responses(op, tokens),
    }
    if op.parameters:
        out["parameters"] = op.parameters
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": _content(op.request, "application/json")}
    return out


def build_document(operations: list[Operation], raw_field_types: dict[str, Any] | None = None,
                   tokens: bool = True) -> dict[str, Any]:
    """The document of `operations`; `raw_field_types` names what each `msgspec.Raw` field holds on
    the wire (it is decoded later, entry by entry). `tokens` False describes a proxy with
    auth = "open", which asks for none."""
    structs: set[type] = {ErrorBody}
    containers: list[Any] = []  # list[Struct], dict[str, list[Struct]]: their Structs become components
    for op in operations:
        for shape in (op.request, op.answer, op.error_body, *op.other_answers.values()):
            if isinstance(shape, type):
                structs.add(shape)
            elif typing.get_origin(shape) is not None and shape not in containers:
                containers.append(shape)
    ordered = sorted(structs, key=lambda s: s.__name__)
    described = [_described(s, raw_field_types or {}) for s in ordered]
    _, components = msgspec.json.schema_components([*described, *containers], ref_template=REF)
    _loosen_raw_fields(components, ordered)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method] = _operation(op, tokens)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "metrics-proxy",
            "version": _version(),
            "description": "Unleash SDK metrics, committed to SQLite before the 202, forwarded upstream.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "an Unleash API token (project:environment.secret), or for the LaunchDarkly "
                               "routes (x-token-kind launchdarkly) a LaunchDarkly access token; with auth = open "
                               "Unleash routes need none and LaunchDarkly routes any",
            }},
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metrics-proxy")
    except PackageNotFoundError:
        return "0+unknown"


OPERATION = Operation("get", "/openapi.json", "This document", None, answer=JSON_OBJECT)


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BYTES], content_type="application/json")


def install(app: web.Application, document: bytes) -> web.RouteDef:
    """The route of /openapi.json, serving `document` (built once, when the app is created)."""
    app[OPENAPI_BYTES] = document
    return web.get("/openapi.json", openapi_json)
