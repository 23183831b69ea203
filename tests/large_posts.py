"""The largest bodies the limits allow, posted to a running proxy while small requests are timed.

Shared by tests/test_large_posts.py (the p99 bound) and bench/large_posts.py (the figures): a few
posts of as many new flags as fit in `max_body_size`, each flag new to the store, while health
checks and small metrics posts run alongside and their latencies are recorded.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

from tests.support import CLIENT_TOKEN, iso


def largest_metrics_body(max_bytes: int, prefix: str, now: float) -> bytes:
    """A metrics post of as many distinct flags as fit under `max_bytes` (every flag new)."""
    head = {"appName": "big-app", "instanceId": "big-1",
            "bucket": {"start": iso(now - 10), "stop": iso(now), "toggles": {}}}
    frame = len(json.dumps(head).encode())
    entry = len(json.dumps({f"{prefix}-0000000": {"yes": 1, "no": 0}}).encode()) - 1  # plus a comma
    flags = (max_bytes - frame - 64) // entry
    head["bucket"]["toggles"] = {f"{prefix}-{n:07d}": {"yes": 1, "no": 0} for n in range(flags)}
    body = json.dumps(head, separators=(",", ": ")).encode()
    while len(body) > max_bytes:  # the estimate is close; trim what is over
        head["bucket"]["toggles"].popitem()
        body = json.dumps(head, separators=(",", ": ")).encode()
    return body


@dataclass
class Timings:
    health_ms: list[float] = field(default_factory=list)
    small_post_ms: list[float] = field(default_factory=list)
    big_statuses: list[int] = field(default_factory=list)
    big_flags: int = 0

    @staticmethod
    def p99(values: list[float]) -> float:
        return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else 0.0)


async def measure(url: str, max_body: int, big_posts: int, now: float, settle: float = 3.0) -> Timings:
    """Post `big_posts` largest bodies one after another; meanwhile, and for `settle` seconds after
    (the proxy folds them then), time health checks and small posts."""
    timings = Timings()
    headers = {"Authorization": CLIENT_TOKEN, "Content-Type": "application/json"}
    done = asyncio.Event()

    # Built before the clock starts: making a 1 MB body takes this process ~70 ms, which would show
    # as the proxy's latency in the timed requests.
    bodies = [largest_metrics_body(max_body, f"flood-{n}", now) for n in range(big_posts)]
    timings.big_flags = sum(len(json.loads(body)["bucket"]["toggles"]) for body in bodies)

    async def big(session: aiohttp.ClientSession) -> None:
        for body in bodies:
            async with session.post(url + "/api/client/metrics", data=body, headers=headers) as r:
                timings.big_statuses.append(r.status)
        await asyncio.sleep(settle)
        done.set()

    async def timed(session: aiohttp.ClientSession, method: str, path: str, sink: list[float], **kw) -> None:
        while not done.is_set():
            started = time.perf_counter()
            async with session.request(method, url + path, **kw) as r:
                await r.read()
                assert r.status in (200, 202), f"{path}: {r.status}"
            sink.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.005)

    small = {"appName": "small-app", "instanceId": "s-1",
             "bucket": {"start": iso(now - 10), "stop": iso(now), "toggles": {"small-flag": {"yes": 1, "no": 0}}}}
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(
            big(session),
            timed(session, "GET", "/internal-backstage/health", timings.health_ms),
            timed(session, "POST", "/api/client/metrics", timings.small_post_ms, json=small, headers=headers),
        )
    return timings
