"""JSON answers of the read endpoints, encoded with msgspec: several times faster than json.dumps
on the large answers (raw usage, seen-apps), which dominated their latency."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_encode = msgspec.json.Encoder().encode


def json_answer(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")
