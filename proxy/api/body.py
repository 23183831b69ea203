"""Reading and validating a JSON request body, bounded in size before and after decompression.

Vendor-neutral: every route that takes a JSON body reads it here. A body that cannot be read or
decoded becomes an ApiError (a status, a message and the field or header at fault); how that is
rendered is the route's business (api/routing.py renders today's rooms' error body). Nothing a
client sends may escape as another exception: aiohttp would answer it with its own text 500.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec
from aiohttp import web

from proxy.api.errors import ApiError, bad_data, validation_error

T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder] = {}


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "ContentTooLargeError",
        f"request body is larger than the limit of {limit} bytes (after decompression)",
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it passes `limit` bytes.

    aiohttp inflates gzip/deflate bodies while streaming them and `read()` stops with
    HTTPRequestEntityTooLarge once they pass the app's client_max_size (set to the limit + 1 in
    the app factories), so the decompressed size is bounded too: a gzip bomb stops at the limit,
    not at 1 GiB. The length check after reading covers a limit below that backstop.
    """
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(limit)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit) from None
    except web.RequestPayloadError as exc:
        raise _unreadable(request, exc) from None
    if len(body) > limit:
        raise _too_large(limit)
    return body


def _unreadable(request: web.Request, exc: web.RequestPayloadError) -> ApiError:
    """The body stopped short of what its headers promised: a corrupt gzip/deflate stream, a plain
    body declared compressed, a chunked or sized body cut off. With a Content-Encoding, that header
    is what did not hold."""
    # The parser stopped inside the body: the connection cannot carry another request. Mark the body
    # read to its end (aiohttp would otherwise drain it after the answer, hit the same error and log
    # it as unhandled) and close the connection after the answer.
    request.content.feed_eof()
    encoding = request.headers.get("Content-Encoding")
    reason = str(exc).split("message:", 1)[-1].strip() or "the body ended early"
    if encoding:
        error = bad_data(f"the body is not valid {encoding} data, as its Content-Encoding says ({reason})",
                         "Content-Encoding")
    else:
        error = bad_data(f"the body could not be read ({reason})")
    error.close = True
    return error


def check_json_content_type(request: web.Request) -> None:
    # A missing Content-Type is read as JSON (curl without -H); a declared other type is refused.
    if "Content-Type" not in request.headers:
        return
    ctype = request.content_type
    if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
        return
    raise ApiError(
        415,
        "ContentTypeError",
        f"unsupported Content-Type {ctype!r}: send application/json",
    )


def decode(body: bytes, schema: type[T]) -> T:
    decoder = _decoders.get(schema)
    if decoder is None:
        decoder = _decoders[schema] = msgspec.json.Decoder(schema)
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, body, schema) from None
    except msgspec.DecodeError as exc:
        raise bad_data(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        # msgspec decodes (and skips unknown fields) recursively: JSON nested beyond the interpreter's
        # recursion limit (~1,000 levels; SDK bodies nest 5) stops there rather than overflow the stack.
        raise bad_data("body is nested too deeply to decode") from None


async def read_json(request: web.Request, schema: type[T], limit: int) -> T:
    check_json_content_type(request)
    return decode(await read_body(request, limit), schema)
