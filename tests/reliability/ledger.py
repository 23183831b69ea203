"""What a crash test's load generator knows about each post: its flag (one flag per post), its
count and its answer. After a kill -9 or a power cut, a post answered 202 must be stored exactly
once, a refused one not at all, and one whose answer never came (in flight) once or not at all."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import aiohttp

from tests.forwarding import metrics_body
from tests.support import CLIENT_TOKEN

ACKED, REFUSED, UNKNOWN = "acked", "refused", "unknown"


class Ledger:
    def __init__(self) -> None:
        self.posts: dict[str, tuple[int, str]] = {}  # flag -> (yes, outcome)

    def outcomes(self) -> Counter:
        return Counter(outcome for _, outcome in self.posts.values())

    def allowed(self, flag: str) -> set[int]:
        """The stored counts this post's outcome allows."""
        yes, outcome = self.posts[flag]
        return {ACKED: {yes}, REFUSED: {0}, UNKNOWN: {0, yes}}[outcome]


async def load(url: str, ledger: Ledger, stop: asyncio.Event, cycle: int, worker: int) -> None:
    """One client posting one new flag at a time until `stop`, or until the proxy goes away."""
    rng = random.Random(cycle * 1000 + worker)
    async with aiohttp.ClientSession(headers={"Authorization": CLIENT_TOKEN}) as session:
        n = 0
        while not stop.is_set():
            flag, yes = f"c{cycle}-w{worker}-r{n}", rng.randint(1, 9)
            n += 1
            body = metrics_body({flag: (yes, 0)}, time.time(), app=f"app-{worker % 3}", instance=f"i-{worker}")
            ledger.posts[flag] = (yes, UNKNOWN)
            try:
                async with session.post(url + "/api/client/metrics", json=body) as response:
                    status = response.status
            except (TimeoutError, aiohttp.ClientError):
                return  # the proxy died (or the power went) under this post: its outcome stays unknown
            ledger.posts[flag] = (yes, ACKED if status == 202 else REFUSED)
