"""Concurrent requests share commits, and every acknowledged count is in the store."""

from __future__ import annotations

import asyncio
import re

from proxy.api.state import STORE
from tests.support import client_headers, epoch_ms

CLIENTS = 50
REQUESTS_PER_CLIENT = 10


def prometheus_value(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    assert match, f"{name} not exposed"
    return float(match.group(1))


async def test_fifty_concurrent_clients_share_commits(client, clock):
    async def sdk(n: int) -> None:
        for i in range(REQUESTS_PER_CLIENT):
            body = {"appName": f"app-{n}", "instanceId": f"i-{n}",
                    "bucket": {"start": epoch_ms(clock.now() - 1), "stop": epoch_ms(clock.now()),
                               "toggles": {"flag": {"yes": 1, "no": i}}}}
            resp = await client.post("/api/client/metrics", json=body, headers=client_headers())
            assert resp.status == 202

    await asyncio.gather(*(sdk(n) for n in range(CLIENTS)))
    requests = CLIENTS * REQUESTS_PER_CLIENT

    text = await (await client.get("/internal-backstage/prometheus")).text()
    commits = prometheus_value(text, "metrics_proxy_sqlite_commits_total")
    assert prometheus_value(text, "metrics_proxy_group_commit_size_sum") == requests
    assert 0 < commits <= requests / 5, f"{commits} commits for {requests} requests"

    totals = await client.app[STORE].totals()
    assert sum(yes for *_, yes, _no in totals) == requests
    assert sum(no for *_, no in totals) == CLIENTS * sum(range(REQUESTS_PER_CLIENT))
