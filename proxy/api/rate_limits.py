"""Inbound rate limits, per presented token and per client address, for a rogue or looping SDK.

Each key (a token, an address) has a token bucket: it holds up to `rate * burst_seconds` requests
(at least one) and refills at `rate` per second. A request that finds its bucket empty is answered
429 with `Retry-After` (the seconds until the bucket holds a request again) in the body of the
room that serves the route (an ApiError), and counted by limit in
metrics_proxy_rate_limited_requests_total. The route wrapper (api/routing.py) asks before the
handler runs; health, readiness and the metrics endpoints are served without asking. A limit of 0
is no limit; both are 0 by default. The buckets live in the process: with ingest workers each
process limits what it is sent.

The buckets of at most MAX_KEYS keys are kept, least recently used first out: a client cycling
through made-up tokens cannot grow the table, and a bucket dropped that way was full anyway unless
its key came back within the last MAX_KEYS keys.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

from proxy.api.errors import ApiError
from proxy.auth import presented_token
from proxy.config import Settings
from proxy.observability.http_metrics import HttpStats

MAX_KEYS = 100_000


class TokenBuckets:
    def __init__(self, rate: float, burst_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst_seconds)
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (requests left, at)

    def take(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 when it had one, else the seconds until it will."""
        now = self.clock()
        left, at = self._buckets.pop(key, (self.capacity, now))
        left = min(self.capacity, left + (now - at) * self.rate)
        wait = 0.0
        if left >= 1.0:
            left -= 1.0
        else:
            wait = (1.0 - left) / self.rate
        self._buckets[key] = (left, now)
        if len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
        return wait


class RateLimiter:
    """The limits of one process; `check` raises the 429 for a request over either."""

    def __init__(self, per_token: float, per_address: float, burst_seconds: float, stats: HttpStats,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self.limits: list[tuple[str, TokenBuckets, Callable[[web.Request], str]]] = []
        if per_address > 0:
            self.limits.append(("address", TokenBuckets(per_address, burst_seconds, clock), _address))
        if per_token > 0:
            self.limits.append(("token", TokenBuckets(per_token, burst_seconds, clock), presented_token))

    @classmethod
    def of(cls, settings: Settings, stats: HttpStats) -> RateLimiter | None:
        """The limiter `settings` ask for, or None when both limits are off."""
        limiter = cls(settings.rate_limit_per_token, settings.rate_limit_per_address,
                      settings.rate_limit_burst_seconds, stats)
        return limiter if limiter.limits else None

    def check(self, request: web.Request) -> None:
        for name, buckets, key_of in self.limits:
            key = key_of(request)
            if not key:
                continue  # no token presented: only the address limit applies
            wait = buckets.take(key)
            if wait > 0:
                self.stats.rate_limited[name] += 1
                raise too_many_requests(name, math.ceil(wait))


def _address(request: web.Request) -> str:
    return request.remote or ""


def too_many_requests(limit: str, retry_after: int) -> ApiError:
    return ApiError(429, "TooManyRequestsError",
                    f"too many requests for this {limit}; retry after {retry_after} s",
                    headers={"Retry-After": str(retry_after)})
