"""LaunchDarkly's error body, `{code, message, id}`, for every error of the room's routes: those
its handlers raise, and those the shared parts raise for them (the body reader's 400/413/415, the
catch-all's 404/405), rendered through the route wrapper (proxy/api/routing.py `renderers`)."""

from __future__ import annotations

import uuid

import msgspec
from aiohttp import web

from proxy.api.errors import BAD_DATA_MESSAGE, ApiError
from proxy.launchdarkly.schemas.common import LdError

INVALID_REQUEST = "invalid_request"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
METHOD_NOT_ALLOWED = "method_not_allowed"
OPTIMISTIC_LOCKING = "optimistic_locking_error"
CONFLICT = "conflict"
RATE_LIMITED = "rate_limited"
CODES = frozenset({INVALID_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, OPTIMISTIC_LOCKING,
                   CONFLICT, RATE_LIMITED, "service_unavailable", "internal_server_error"})
# The code of an error raised by a shared part, by status (LaunchDarkly names no code for 413/415:
# they are requests it cannot take, invalid_request).
_BY_STATUS = {400: INVALID_REQUEST, 401: UNAUTHORIZED, 403: FORBIDDEN, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED,
              409: CONFLICT, 413: INVALID_REQUEST, 415: INVALID_REQUEST, 429: RATE_LIMITED,
              503: "service_unavailable"}

_encode = msgspec.json.Encoder().encode


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> ApiError:
    """An error of this room: `code` is one of LaunchDarkly's."""
    return ApiError(status, code, message, headers=headers)


def invalid(message: str) -> ApiError:
    return error(400, INVALID_REQUEST, message)


def not_found(what: str) -> ApiError:
    return error(404, NOT_FOUND, f"Invalid resource identifier: {what}")


def render(exc: ApiError) -> web.Response:
    code = exc.name if exc.name in CODES else _BY_STATUS.get(exc.status, INVALID_REQUEST if exc.status < 500
                                                                   else "internal_server_error")
    message = exc.message
    if message == BAD_DATA_MESSAGE and exc.details:  # the shared reader's 400: its detail names the field
        message = exc.details[0].message
    body = LdError(code=code, message=message, id=str(uuid.uuid4()))
    response = web.Response(status=exc.status, body=_encode(body), content_type="application/json",
                            headers=exc.headers)
    if exc.close:
        response.force_close()
    return response
