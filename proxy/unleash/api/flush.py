"""POST /internal-backstage/flush: `metrics-proxy flush` asks the running proxy to send now."""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.api.render import json_answer
from proxy.api.schemas.backstage import FlushResult
from proxy.api.state import SETTINGS
from proxy.unleash.api.admin import require_admin
from proxy.unleash.state import FORWARDER


async def flush(request: web.Request) -> web.Response:
    await require_admin(request)
    forwarder = request.app.get(FORWARDER)
    settings = request.app[SETTINGS].upstream
    if forwarder is None or settings is None:
        raise ApiError(409, "NoUpstreamError", "no [upstream] is configured: there is nothing to flush")
    try:
        left = await asyncio.wait_for(asyncio.shield(forwarder.flush()), settings.shutdown_flush_timeout)
        done = True
    except TimeoutError:
        # The sends go on in the background; the caller learns they did not finish in time.
        left, done = forwarder.outbox.pending_batch_count(), False
    return json_answer(FlushResult(finished=done, batchesLeft=left))


def routes() -> list[web.RouteDef]:
    return [web.post("/internal-backstage/flush", flush)]
