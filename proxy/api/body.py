"""Reading and validating a JSON request body, bounded in size before and after decompression.

Vendor-neutral: every route that takes a JSON body reads it here. A body that cannot be read or
decoded becomes an ApiError (a status, a message and the field or header at fault); how that is
rendered is the route's business (api/routing.py renders today's rooms' error body). Nothing a
client sends may escape as another exception: aiohttp would answer it with its own text 500.

Compressed bodies are inflated here, not by aiohttp (app_options switches its decoder off): a
stream aiohttp could not decode failed inside its HTTP parser, where no handler sees it, and got
aiohttp's own text 400 and a logged traceback; an encoding it did not know reached the handler as
if the body were plain. Here every Content-Encoding is either decoded (gzip, x-gzip, deflate,
identity) or refused with 415, and every broken stream is a 400 naming the header.
"""

from __future__ import annotations

import zlib
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from proxy.api.errors import ApiError, bad_data, validation_error
from proxy.api.schemas.errors import ErrorDetail

T = TypeVar("T")

_decoders: dict[type, msgspec.json.Decoder] = {}


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        "ContentTooLargeError",
        f"request body is larger than the limit of {limit} bytes (after decompression)",
    )


ACCEPTED_ENCODINGS = "gzip, deflate"
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip container around deflate
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def app_options(max_body_size: int) -> dict[str, Any]:
    """web.Application arguments for an app whose routes read their bodies here: `request.read()`
    stops after max_body_size + 1 bytes, and aiohttp leaves compressed bodies to this module."""
    return {"client_max_size": max_body_size + 1, "handler_args": {"auto_decompress": False}}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, decoded as its Content-Encoding says, or 413 as soon as it passes `limit`
    bytes, before or after decompression.

    `read()` stops with HTTPRequestEntityTooLarge once the body on the wire passes the app's
    client_max_size (the limit + 1, app_options), and inflating stops at limit + 1 bytes too: a gzip
    bomb stops at the limit, not at 1 GiB. The length check after reading covers a limit below
    that backstop.
    """
    codings = _content_codings(request)
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
    for coding in reversed(codings):  # applied in the order listed: undone last to first
        body = _inflate(body, coding, limit)
    return body


def _content_codings(request: web.Request) -> list[str]:
    """The codings of the Content-Encoding header (identity left out), or 415 for one this module
    cannot decode (RFC 9110 15.5.16: the answer says which it can, in Accept-Encoding)."""
    header = request.headers.get("Content-Encoding")
    if not header:
        return []
    codings = []
    for token in header.split(","):
        coding = token.strip().lower()
        if coding in ("", "identity"):
            continue
        if coding not in _CODINGS:
            raise ApiError(
                415, "ContentEncodingError",
                f"unsupported Content-Encoding {coding[:40]!r}: send the body plain, gzip or deflate",
                [ErrorDetail(message=f"{coding[:40]!r} is not one of {ACCEPTED_ENCODINGS}", path="Content-Encoding")],
                headers={"Accept-Encoding": ACCEPTED_ENCODINGS},
            )
        codings.append(_CODINGS[coding])
    return codings


def _inflate(data: bytes, coding: str, limit: int) -> bytes:
    """`data` decoded from gzip (one member or several, one after the other) or deflate: a zlib
    stream as RFC 9110 defines it, or raw deflate as some clients send it. The whole body must be
    the stream(s)."""
    if coding == "gzip":
        parts: list[bytes] = []
        size = 0
        while data:  # gzip members one after another make one body
            part, data = _inflate_stream(data, _GZIP_WBITS, coding, limit - size, limit)
            size += len(part)
            parts.append(part)
        if not parts:
            raise _undecodable(coding, "the body is empty")
        return b"".join(parts)
    # A zlib header's low bits say deflate (8) and its two bytes are a multiple of 31; raw deflate
    # may start with the same bits by chance, so it is what is tried when the zlib reading fails.
    if data[:1] and data[0] & 0x0F == 8 and int.from_bytes(data[:2], "big") % 31 == 0:
        try:
            part, rest = _inflate_stream(data, zlib.MAX_WBITS, coding, limit, limit)
        except ApiError as exc:
            if exc.status == 413:
                raise
        else:
            return _whole(part, rest, coding)
    return _whole(*_inflate_stream(data, -zlib.MAX_WBITS, coding, limit, limit), coding)


def _inflate_stream(data: bytes, wbits: int, coding: str, room: int, limit: int) -> tuple[bytes, bytes]:
    """One compressed stream from the start of `data`, inflated to at most `room` bytes (past that
    the body passes `limit`: 413); returns it and the bytes after the stream's end."""
    inflater = zlib.decompressobj(wbits)
    try:
        part = inflater.decompress(data, room + 1)
    except zlib.error as exc:
        raise _undecodable(coding, str(exc)) from None
    if len(part) > room:
        raise _too_large(limit)
    if not inflater.eof:
        raise _undecodable(coding, "the stream is cut short")
    return part, inflater.unused_data


def _whole(part: bytes, rest: bytes, coding: str) -> bytes:
    if rest:
        raise _undecodable(coding, f"{len(rest)} bytes follow the end of the stream")
    return part


def _undecodable(coding: str, reason: str) -> ApiError:
    return bad_data(f"the body is not valid {coding} data, as its Content-Encoding says ({reason})",
                    "Content-Encoding")


def _unreadable(request: web.Request, exc: web.RequestPayloadError) -> ApiError:
    """The body stopped short of what its headers promised: a sized or chunked body cut off or
    malformed (or, in an app whose aiohttp still inflates bodies, a stream it could not decode)."""
    # The parser stopped inside the body: the connection cannot carry another request. Mark the body
    # read to its end (aiohttp would otherwise drain it after the answer, hit the same error and log
    # it as unhandled) and close the connection after the answer.
    request.content.feed_eof()
    reason = str(exc).split("message:", 1)[-1].strip() or "the body ended early"
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
