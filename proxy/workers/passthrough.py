"""A worker passes every request it does not ingest itself to the primary, over a private Unix
socket the primary also serves (in the data folder), and hands back status, headers and body.

The primary sees such a request as coming from the socket; the worker names the real client in
CLIENT_ADDRESS_HEADER, which the primary believes only on that socket (with_client_address).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.api.errors import ApiError

CLIENT_ADDRESS_HEADER = "X-Metrics-Proxy-Client-Address"
SOCKET_NAME = "primary.sock"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
# Not passed on: they describe one hop. Content-Encoding is passed: the body goes on as it came
# (aiohttp does not inflate request bodies here; the primary's api/body.py does).
HOP_HEADERS = frozenset(h.lower() for h in (
    "Host", "Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length",
    "Upgrade", "TE", "Trailer", "Proxy-Connection", CLIENT_ADDRESS_HEADER,
))
PASS_TIMEOUT_SECONDS = 60.0
# Connections a worker keeps to the primary at most; the primary keeps descriptors for them out of
# its default max_connections (proxy/api/connections.py).
PASS_THROUGH_CONNECTIONS = 100


def primary_socket_path(data_dir: Path) -> Path:
    path = data_dir.resolve() / SOCKET_NAME
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"metrics-proxy-{digest}.sock"


class PassThrough:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._session: aiohttp.ClientSession | None = None
        self.passed = 0

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path), limit=PASS_THROUGH_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(total=PASS_TIMEOUT_SECONDS),
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        headers[CLIENT_ADDRESS_HEADER] = request.remote or ""
        body: Any = request.content if request.body_exists else None
        self.passed += 1
        try:
            async with self._session.request(
                request.method, "http://primary" + request.rel_url.raw_path_qs,
                headers=headers, data=body, allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
                return web.Response(status=answer.status, headers=out, body=payload)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ApiError(502, "BadGatewayError", f"the main proxy process did not answer: {exc}") from None

    async def close(self, _app: object = None) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def with_client_address(request: web.Request) -> web.Request:
    """Primary: a request a worker passed on keeps the client address the worker saw."""
    forwarded = request.headers.get(CLIENT_ADDRESS_HEADER)
    if forwarded is not None and isinstance(request.transport and request.transport.get_extra_info("sockname"), str):
        return request.clone(remote=forwarded or None)
    return request
