"""Concurrent SDK metrics posts whose every outcome is known exactly, for crash tests.

Each post counts two flags no other post uses, so what reached the upstream can be checked post by
post: an acknowledged post exactly once, a refused or unsent one never, and a post whose answer was
lost (the proxy died while it was being handled) either never or exactly once, whichever the proxy
committed before it died. A post is never retried: a retry of a post that was committed before the
connection broke would count it twice, and the SDK contract has no key to prevent that.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum

import aiohttp

from tests.forwarding import metrics_body
from tests.support import client_headers

APP_NAME = "chain-sdk"


class Outcome(Enum):
    ACKNOWLEDGED = "202"  # must arrive exactly once
    REFUSED = "refused"  # an HTTP answer other than 202, or no connection: must never arrive
    UNKNOWN = "unknown"  # the connection broke after the request was sent: never or exactly once


@dataclass
class Post:
    toggles: dict[str, tuple[int, int]]
    outcome: Outcome | None = None


@dataclass
class SdkLoad:
    url: str  # the proxy's base URL
    prefix: str = "p"  # of the flag names: two loads with different prefixes never share a flag
    workers: int = 6
    pause: float = 0.01  # between one worker's posts, so a shared CI machine keeps up
    posts: list[Post] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20))
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()

    def count(self, outcome: Outcome) -> int:
        return sum(1 for p in self.posts if p.outcome is outcome)

    def acknowledged_since(self, index: int) -> int:
        return sum(1 for p in self.posts[index:] if p.outcome is Outcome.ACKNOWLEDGED)

    async def _worker(self) -> None:
        while not self._stop.is_set():
            n = len(self.posts)
            post = Post({f"{self.prefix}{n}-a": (random.randint(1, 9), random.randint(0, 9)),
                         f"{self.prefix}{n}-b": (random.randint(0, 9), random.randint(1, 9))})
            self.posts.append(post)
            post.outcome = await self._send(post)
            await asyncio.sleep(self.pause if post.outcome is Outcome.ACKNOWLEDGED else 0.05)

    async def _send(self, post: Post) -> Outcome:
        body = metrics_body(post.toggles, time.time(), app=APP_NAME)
        try:
            async with self._session.post(self.url + "/api/client/metrics", json=body,
                                          headers=client_headers()) as response:
                await response.read()
                return Outcome.ACKNOWLEDGED if response.status == 202 else Outcome.REFUSED
        except aiohttp.ClientConnectorError:
            return Outcome.REFUSED  # nothing was sent: the proxy was down
        except (TimeoutError, aiohttp.ClientError):
            return Outcome.UNKNOWN


def mismatches(posts: list[Post], arrived: Counter) -> list[str]:
    """Every post whose arrival contradicts its outcome, and every arrival no post explains.

    `arrived` maps (flag, "yes"|"no") to the total the upstream received."""
    problems = []
    explained = set()
    for n, post in enumerate(posts):
        expected = Counter()
        for flag, (yes, no) in post.toggles.items():
            expected[flag, "yes"], expected[flag, "no"] = yes, no
            explained.update({(flag, "yes"), (flag, "no")})
        got = Counter({key: arrived[key] for key in expected})
        allowed = {
            Outcome.ACKNOWLEDGED: [+expected],
            Outcome.REFUSED: [Counter()],
            Outcome.UNKNOWN: [Counter(), +expected],
        }[post.outcome]
        if +got not in allowed:
            problems.append(f"post {n} ({post.outcome.value}): sent {dict(+expected)}, upstream got {dict(+got)}")
    problems += [f"upstream got {key}={value} that no post sent" for key, value in arrived.items()
                 if key not in explained and value]
    return problems
