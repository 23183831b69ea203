"""Writes queued while LaunchDarkly is unreachable survive kill -9: after a restart with the
upstream back, each is replayed exactly once, in the order they were accepted."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from proxy.launchdarkly.upstream.writes import PENDING_HEADER
from tests.ld_support import HEADERS, LD_TOKEN, custom_metric
from tests.ld_upstream import UPSTREAM_TOKEN, start_stand_in, stop_stand_in
from tests.support import ProxyProcess


async def test_queued_writes_survive_kill_9_and_replay_exactly_once(tmp_path, clock, proxies):
    upstream = await start_stand_in(tmp_path, clock)
    try:
        env = {
            "METRICS_PROXY_LAUNCHDARKLY_ACCESS_TOKENS": LD_TOKEN,
            "METRICS_PROXY_LAUNCHDARKLY_API_URL": upstream.url,
            "METRICS_PROXY_LAUNCHDARKLY_API_TOKEN": UPSTREAM_TOKEN,
            "METRICS_PROXY_LAUNCHDARKLY_RETRY_INITIAL": "0.05",
            "METRICS_PROXY_LAUNCHDARKLY_RETRY_MAX": "0.2",
        }
        proxy = ProxyProcess(tmp_path / "data", extra_env=env)
        proxies.append(proxy)
        await asyncio.to_thread(proxy.start)
        upstream.down = True
        expected = []
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            for n in range(5):
                async with session.post(f"{proxy.url}/api/v2/metrics/proj", json=custom_metric(f"m{n}")) as response:
                    assert response.status == 202 and response.headers[PENDING_HEADER]
                expected.append(("POST", "/api/v2/metrics/proj"))
            patch = [{"op": "replace", "path": "/name", "value": "renamed"}]
            async with session.patch(f"{proxy.url}/api/v2/metrics/proj/m0", json=patch) as response:
                assert response.status == 202
            expected.append(("PATCH", "/api/v2/metrics/proj/m0"))
        await asyncio.to_thread(proxy.kill)
        upstream.down = False
        restarted = ProxyProcess(tmp_path / "data", port=proxy.port, extra_env=env)
        proxies.append(restarted)
        await asyncio.to_thread(restarted.start)
        deadline = asyncio.get_running_loop().time() + 20
        while len(upstream.writes()) < len(expected):
            assert asyncio.get_running_loop().time() < deadline, (upstream.writes(), restarted.log()[-2000:])
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing more arrives
        assert upstream.writes() == expected
        posted = [a.body for a in upstream.arrivals if a.method == "POST" and a.status == 201]
        assert [json.loads(body)["key"] for body in posted] == [f"m{n}" for n in range(5)]
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            async with session.get(f"{restarted.url}/api/v2/metrics/proj/m0") as response:
                assert (await response.json())["name"] == "renamed"
            async with session.get(f"{restarted.url}/internal-backstage/launchdarkly/dead-letters") as response:
                assert (await response.json())["totalCount"] == 0
    finally:
        await stop_stand_in(upstream)
