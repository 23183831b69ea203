"""The JSON error body every non-2xx answer carries, in Unleash's shape."""

from __future__ import annotations

import msgspec


class ErrorDetail(msgspec.Struct, kw_only=True, omit_defaults=True):
    message: str
    path: str | None = None


class ErrorBody(msgspec.Struct, kw_only=True):
    id: str
    name: str
    message: str
    details: list[ErrorDetail]
