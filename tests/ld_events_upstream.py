"""A LaunchDarkly events service stand-in on loopback: it records every post (path, headers,
decompressed body, payload id) and answers as the test scripts it."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

KEPT_HEADERS = ("authorization", "content-type", "content-encoding", "user-agent", "x-launchdarkly-event-schema",
                "x-launchdarkly-payload-id", "x-launchdarkly-tags")


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: object  # the decompressed JSON
    status: int

    @property
    def payload_id(self) -> str:
        return self.headers["x-launchdarkly-payload-id"]

    @property
    def events(self) -> list:
        return self.body if isinstance(self.body, list) else [self.body]


@dataclass
class EventsUpstream:
    server: TestServer | None = None
    posts: list[Post] = field(default_factory=list)
    # Scripted answers, first come first used: (status, headers); then `answer(post)` or 202.
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    answer: Callable[[Post], int] | None = None
    max_events: int | None = None  # a body of more events is answered 413
    hang: float = 0.0  # seconds to wait before answering (a timeout after the body went out)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS}
        post = Post(request.path, headers, json.loads(raw), 202)
        if self.script:
            post.status, extra = self.script.pop(0)
        else:
            extra = {}
            if self.max_events is not None and len(post.events) > self.max_events:
                post.status = 413
            elif self.answer is not None:
                post.status = self.answer(post)
        self.posts.append(post)
        if self.hang:
            await asyncio.sleep(self.hang)
        return web.Response(status=post.status, headers=extra)

    def accepted(self) -> list[Post]:
        return [p for p in self.posts if 200 <= p.status < 300]

    def accepted_events(self, once_per_payload_id: bool = True) -> list:
        """Every event of the 2xx posts (a payload id counted once: LaunchDarkly's dedup)."""
        seen: set[str] = set()
        found = []
        for post in self.accepted():
            if once_per_payload_id and post.payload_id in seen:
                continue
            seen.add(post.payload_id)
            found.extend(post.events)
        return found


async def start_events_upstream(**options) -> EventsUpstream:
    upstream = EventsUpstream(**options)
    # Bodies as they came (gzip is checked and undone here, not by aiohttp).
    app = web.Application(client_max_size=64 * 1024 * 1024, handler_args={"auto_decompress": False})
    app.router.add_route("POST", "/{tail:.*}", upstream.handle)
    upstream.server = TestServer(app, host="127.0.0.1")
    await upstream.server.start_server()
    return upstream


async def stop_events_upstream(upstream: EventsUpstream) -> None:
    if upstream.server is not None:
        await upstream.server.close()
