"""GET /openapi.json: an OpenAPI 3.1 document generated from the msgspec wire Structs.

The document is built once when the app is created and served as cached bytes. Body shapes come
from `msgspec.json.schema_components` over the Structs the handlers decode and encode, so the
document cannot drift from what the handlers accept; the route-level facts are in
proxy/unleash/api/openapi_operations.py.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from proxy.api.schemas.errors import ErrorBody
from proxy.unleash.api.openapi_operations import OPERATIONS, Operation
from proxy.unleash.schemas.impact import ImpactMetric

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{name}"
SECURITY_SCHEME = "apiKey"
OPENAPI_BYTES = web.AppKey("openapi_bytes", bytes)

# `msgspec.Raw` fields are decoded later, entry by entry; this is what they hold on the wire.
RAW_FIELD_TYPES: dict[str, Any] = {"impactMetrics": list[ImpactMetric]}
RAW_FIELD_NOTE = (
    "What SDKs send here. Accepted leniently: an entry that does not match, or a value that is no "
    "list, is dropped and counted (impact_metric_invalid) and the post's usage counts still stored."
)

_TOKEN_ERRORS = {
    401: "no API token in the Authorization header",
    403: "the token is unknown, or of another kind than this endpoint needs",
}
_ERROR_REASONS = {
    400: "bad body or parameter; details[0].path names it",
    404: "not found",
    409: "not possible in this configuration",
    413: "the body is larger than max_body_size (after decompression)",
    415: "the Content-Type is not JSON",
    503: "the store cannot write, or an upstream is needed and unreachable; see Retry-After",
}


def _described(struct: type) -> type:
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
            if info.name not in RAW_FIELD_TYPES:
                raise TypeError(f"{struct.__name__}.{info.name} is raw JSON without a documented type")
            fields.append((info.name, RAW_FIELD_TYPES[info.name] | msgspec.UnsetType, msgspec.UNSET))
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


def _content(answer: type | dict[str, Any], media: str) -> dict[str, Any]:
    schema = answer if isinstance(answer, dict) else _schema_ref(answer)
    return {media: {"schema": schema}}


def _error(reason: str) -> dict[str, Any]:
    return {"description": reason, "content": _content(ErrorBody, "application/json")}


def _responses(op: Operation, tokens: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.answer is None:
        responses["202"] = {"description": "committed to the local store; empty body"}
    else:
        responses["200"] = {"description": "OK", "content": _content(op.answer, op.answer_media)}
    if op.not_modified:
        responses["304"] = {"description": "the If-None-Match ETag still matches; empty body"}
    # A token op may also answer 503 while an upstream that must validate a new token is unreachable.
    statuses = set(op.errors) | ({*_TOKEN_ERRORS, 503} if op.token and tokens else set())
    if op.request is not None or op.parameters:
        statuses.add(400)
    for status in sorted(statuses):
        responses[str(status)] = _error(_TOKEN_ERRORS.get(status) or _ERROR_REASONS[status])
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


def build_document(tokens: bool = True, operations: list[Operation] = OPERATIONS) -> dict[str, Any]:
    """The document; `tokens` False describes a proxy with auth = "open", which asks for none."""
    structs = {ErrorBody}
    for op in operations:
        structs.update(t for t in (op.request, op.answer, *op.other_answers.values()) if isinstance(t, type))
    ordered = sorted(structs, key=lambda s: s.__name__)
    _, components = msgspec.json.schema_components([_described(s) for s in ordered], ref_template=REF)
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
                "description": "an Unleash API token (project:environment.secret); not needed with auth = open",
            }},
        },
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metrics-proxy")
    except PackageNotFoundError:
        return "0+unknown"


def document_bytes(tokens: bool = True) -> bytes:
    return msgspec.json.encode(build_document(tokens))


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BYTES], content_type="application/json")


def install(app: web.Application, tokens: bool) -> web.RouteDef:
    """The route of /openapi.json, served from bytes built now, once."""
    app[OPENAPI_BYTES] = document_bytes(tokens)
    return web.get("/openapi.json", openapi_json)
