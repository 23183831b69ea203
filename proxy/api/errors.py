"""API errors: one exception type, rendered as the documented JSON error body (api/routing.py)."""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from proxy.api.schemas.errors import ErrorBody, ErrorDetail

_encoder = msgspec.json.Encoder()

BAD_DATA_MESSAGE = (
    "Request validation failed: your request body or params contain invalid data. "
    "Refer to the `details` list for more information."
)


class ApiError(Exception):
    """An error answer. `response()` renders the Unleash-style body `{id, name, message, details}`;
    a route group whose vendor has another error shape renders its errors itself (ErrorRenderer,
    given to api/routing.py `serve`)."""

    def __init__(
        self,
        status: int,
        name: str,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.details = details if details is not None else [ErrorDetail(message=message)]
        self.headers = headers or {}
        # The connection cannot carry another request (its body could not be parsed to the end):
        # answer with `Connection: close` and let aiohttp close it after the answer.
        self.close = close

    def response(self) -> web.Response:
        body = ErrorBody(id=str(uuid.uuid4()), name=self.name, message=self.message, details=self.details)
        response = web.Response(
            status=self.status,
            body=_encoder.encode(body),
            content_type="application/json",
            headers=self.headers,
        )
        if self.close:
            response.force_close()
        return response


# Renders an ApiError as one vendor's error body (e.g. proxy/launchdarkly/api/errors.py).
ErrorRenderer = Callable[[ApiError], web.Response]


def bad_data(message: str, path: str | None = None) -> ApiError:
    return ApiError(400, "BadDataError", BAD_DATA_MESSAGE, [ErrorDetail(message=message, path=path)])


def not_found(message: str) -> ApiError:
    return ApiError(404, "NotFoundError", message)


def method_not_allowed(method: str, allowed: set[str]) -> ApiError:
    methods = ", ".join(sorted(allowed))
    return ApiError(405, "MethodNotAllowedError", f"{method} is not allowed here; use {methods}",
                    headers={"Allow": methods})


def unavailable(message: str, retry_after: int) -> ApiError:
    return ApiError(503, "ServiceUnavailableError", message, headers={"Retry-After": str(retry_after)})


# --- turning msgspec validation errors into a field path ---------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_AT_KEY = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.S)
_SEGMENT = re.compile(r"\.(\w+)|\[(\d+)\]|\[(\.\.\.)\]")


def _unwrap(tp: Any) -> list[Any]:
    """The concrete alternatives behind Annotated / Optional / Union."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(tp) for alt in _unwrap(arg)]
    return [tp]


def _child_type(tp: Any, segment: tuple[str, str, str]) -> Any:
    field, index, dict_value = segment
    for alt in _unwrap(tp):
        if field and isinstance(alt, type) and issubclass(alt, msgspec.Struct):
            hints = typing.get_type_hints(alt, include_extras=True)
            if field in hints:
                return hints[field]
        origin = typing.get_origin(alt)
        if index and origin is list:
            return typing.get_args(alt)[0]
        if dict_value and origin is dict:
            return typing.get_args(alt)[1]
    return Any


def _locate(raw: Any, tp: Any, path: str) -> tuple[str, Any, Any]:
    """Replace msgspec's `[...]` (an unnamed dict key) with the key whose value fails validation;
    returns that path, and the decoded value and type found at its end."""
    out: list[str] = []
    segments = [m.groups() for m in _SEGMENT.finditer(path)]
    for seg in segments:
        field, index, dict_value = seg
        tp = _child_type(tp, seg)
        if field:
            out.append(("." if out else "") + field)
            raw = raw.get(field) if isinstance(raw, dict) else None
        elif index:
            out.append(f"[{index}]")
            raw = raw[int(index)] if isinstance(raw, list) and int(index) < len(raw) else None
        else:
            key = None
            if isinstance(raw, dict):
                for k, v in raw.items():
                    try:
                        msgspec.convert(v, tp)
                    except msgspec.ValidationError:
                        key = k
                        break
            out.append(f"[{key!r}]" if key is not None else "[...]")
            raw = raw.get(key) if key is not None else None
    return "".join(out), raw, tp


_PREVIEW = 40


def _preview(key: str) -> str:
    """A key as an error message quotes it: the start of a long one and its length, never all of it."""
    if len(key) <= _PREVIEW:
        return repr(key)
    return f"{key[:_PREVIEW]!r}... ({len(key)} characters)"


def _key_error(message: str, path: str, body: bytes, schema: type) -> ApiError:
    """A dict key breaks its constraint (a flag or variant name too long or empty): the path names
    the object, the message quotes the key."""
    try:
        path, found, tp = _locate(msgspec.json.decode(body), schema, path)
    except (msgspec.DecodeError, RecursionError):
        found, tp = None, Any
    key_types = [typing.get_args(alt)[0] for alt in _unwrap(tp) if typing.get_origin(alt) is dict]
    if isinstance(found, dict) and key_types:
        for key in found:
            try:
                msgspec.convert(key, key_types[0])
            except msgspec.ValidationError:
                message = f"{message}, for the key {_preview(key)}"
                break
    path = path.lstrip(".")
    return bad_data(f"{message} at `{path}`" if path else message, path or None)


def validation_error(exc: msgspec.ValidationError, body: bytes, schema: type) -> ApiError:
    """A 400 naming the wrong field, e.g. path `bucket.toggles['flag-a'].yes`."""
    key_match = _AT_KEY.match(str(exc))
    if key_match:
        return _key_error(key_match.group("msg"), key_match.group("path"), body, schema)
    match = _AT.match(str(exc))
    message = match.group("msg") if match else str(exc)
    path = (match.group("path") if match else "") or ""
    missing = re.search(r"missing required field `([^`]+)`", message)
    if missing:
        path = f"{path}.{missing.group(1)}"
    if "[...]" in path:
        try:
            path = _locate(msgspec.json.decode(body), schema, path)[0]
        except (msgspec.DecodeError, RecursionError):
            pass
    path = path.lstrip(".")
    return bad_data(f"{message} at `{path}`" if path else message, path or None)
