"""GET /internal-backstage/launchdarkly/dead-letters: the queued writes LaunchDarkly refused."""

from __future__ import annotations

import json

from aiohttp import web

from proxy.api.render import json_answer
from proxy.launchdarkly.api.common import authorize, read
from proxy.launchdarkly.api.listing import integer
from proxy.launchdarkly.errors import invalid
from proxy.launchdarkly.schemas.common import DeadLetter, DeadLetterList
from proxy.launchdarkly.store import queue

PATH = "/internal-backstage/launchdarkly/dead-letters"
MAX_LIMIT = 1000


def dead_letter(row: tuple) -> DeadLetter:
    letter_id, project, item, status, reason, created = row
    write = json.loads(item)
    body = None if write.get("body") is None else json.loads(write["body"])
    return DeadLetter(id=letter_id, project=project, method=write["method"], path=write["path"], body=body,
                      status=status, error=reason, at=created)


async def dead_letters(request: web.Request) -> web.Response:
    authorize(request)
    limit = integer(request, "limit", 100)
    if not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"`limit` must be between 1 and {MAX_LIMIT}, got {limit}")
    total, rows = await read(request, queue.dead_letters, limit)
    return json_answer(DeadLetterList(totalCount=total, items=[dead_letter(row) for row in rows]))


def routes() -> list[web.RouteDef]:
    return [web.get(PATH, dead_letters)]
