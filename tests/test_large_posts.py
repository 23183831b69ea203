"""The largest bodies the limits allow do not stall other requests (issue 17, defect 8).

One post of as many new flags as fit in max_body_size (27,000 at the default 1 MiB) used to be
folded in one transaction: the event loop stood still for over a second and every request
queued behind it. Now large deltas are staged and written in chunks cut by keys, whatever the
group, so health checks and small posts keep their latency while four such posts land, and every
count arrives.
"""

from __future__ import annotations

import json
import time
import urllib.request

from tests.large_posts import Timings, measure
from tests.support import ADMIN_TOKEN, ProxyProcess

P99_BOUND_MS = 50.0


def last_hour_yes(url: str) -> int:
    req = urllib.request.Request(url + "/api/client/metrics/feature-toggles", headers={"Authorization": ADMIN_TOKEN})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return sum(counts["yes"] for counts in json.load(resp)["lastHour"].values())


async def test_the_largest_posts_leave_health_and_small_posts_under_50_ms(tmp_path):
    # Every count is read back from one feature-toggles answer, which must list all 100,000 flags.
    proxy = ProxyProcess(tmp_path / "data", extra_env={"METRICS_PROXY_READ_MAX_FLAGS": "1000000"}).start()
    try:
        timings = await measure(proxy.url, 1024 * 1024, big_posts=4, now=time.time(), settle=4.0)
        assert timings.big_statuses == [202] * 4 and timings.big_flags > 100_000
        assert len(timings.health_ms) > 100 and len(timings.small_post_ms) > 100
        health, small = Timings.p99(timings.health_ms), Timings.p99(timings.small_post_ms)
        assert health < P99_BOUND_MS and small < P99_BOUND_MS, (
            f"p99 health {health:.1f} ms, small posts {small:.1f} ms while {timings.big_flags} flags landed")
        assert last_hour_yes(proxy.url) == timings.big_flags + len(timings.small_post_ms)
    finally:
        proxy.stop()
