"""Inbound rate limits: a client over its limit (per token, per address) gets 429 with Retry-After
and the vendor's error body, counted in Prometheus, while other clients keep getting 202; health,
readiness and metrics are never limited; with both limits at 0 (the default) nothing is."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from proxy.api.rate_limits import TokenBuckets
from tests.ld_support import BETA, LD_SETTINGS, custom_metric, error_of
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, PROD_TOKEN, ProxyProcess, client_headers, epoch_ms

BACKSTAGE = ["/internal-backstage/health", "/internal-backstage/ready", "/internal-backstage/prometheus", "/metrics"]


def body() -> dict:
    now = time.time()
    return {"appName": "app", "instanceId": "i", "bucket": {
        "start": epoch_ms(now - 1), "stop": epoch_ms(now), "toggles": {"flag": {"yes": 1, "no": 0}}}}


def limited_count(text: str, limit: str) -> float:
    line = f'metrics_proxy_rate_limited_requests_total{{limit="{limit}"}} '
    return float(next(row for row in text.splitlines() if row.startswith(line)).split()[-1])


async def test_a_token_over_its_limit_gets_429_while_another_token_keeps_getting_202(make_client):
    client = await make_client(rate_limit_per_token=2.0, rate_limit_burst_seconds=2.0)  # 4 at once, 2 a second
    statuses = [(await client.post("/api/client/metrics", json=body(), headers=client_headers())).status
                for _ in range(12)]
    assert statuses[:4] == [202] * 4 and statuses.count(429) >= 7, statuses
    refused = await client.post("/api/client/metrics", json=body(), headers=client_headers())
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 1
    error = await refused.json()
    assert error["name"] == "TooManyRequestsError" and set(error) == {"id", "name", "message", "details"}
    # another token (another SDK's) is not held back, nor are health, readiness and metrics
    for _ in range(3):
        assert (await client.post("/api/client/metrics", json=body(), headers=client_headers(PROD_TOKEN))).status == 202
    for _ in range(3):
        for path in BACKSTAGE:
            assert (await client.get(path, headers=client_headers())).status == 200, path
    metrics = await (await client.get("/internal-backstage/prometheus")).text()
    assert limited_count(metrics, "token") == statuses.count(429) + 1
    assert limited_count(metrics, "address") == 0
    assert 'metrics_proxy_http_requests_total{method="POST",route="/api/client/metrics",status="429"}' in metrics


async def test_launchdarklys_routes_answer_429_in_launchdarklys_error_body(make_client):
    client = await make_client(launchdarkly=LD_SETTINGS, rate_limit_per_token=1.0, rate_limit_burst_seconds=2.0)
    statuses = [(await client.post("/api/v2/metrics/p", json=custom_metric(f"m{i}"), headers=BETA)).status
                for i in range(6)]
    assert statuses[:2] == [201, 201] and 429 in statuses, statuses
    refused = await client.get("/api/v2/metrics/p", headers=BETA)
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert "retry after" in await error_of(refused, 429, "rate_limited")


async def test_without_limits_nothing_is_refused(make_client):
    client = await make_client()
    statuses = [(await client.post("/api/client/metrics", json=body(), headers=client_headers())).status
                for _ in range(30)]
    assert statuses == [202] * 30


def test_a_bucket_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=2.0, burst_seconds=1.5, clock=lambda: now[0])  # holds 3
    assert [buckets.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k") == 0.5
    now[0] = 0.5
    assert buckets.take("k") == 0.0  # one came back in half a second
    assert buckets.take("other") == 0.0
    assert TokenBuckets(rate=0.1, burst_seconds=1.0).capacity == 1.0  # at least one request


async def post_from(address: str, url: str, token: str, count: int) -> list[int]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        statuses = []
        for _ in range(count):
            async with session.post(url + "/api/client/metrics", json=body(), headers=client_headers(token)) as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert r.headers["Retry-After"].isdigit()
        for path in BACKSTAGE:  # never limited, even for a client over its limit
            async with session.get(url + path, headers={"Authorization": ADMIN_TOKEN}) as r:
                assert r.status == 200, path
        return statuses


async def test_an_address_over_its_limit_gets_429_while_other_clients_keep_getting_202(proxies, tmp_path):
    proxy = ProxyProcess(tmp_path / "data", extra_env={
        "METRICS_PROXY_RATE_LIMIT_PER_ADDRESS": "1", "METRICS_PROXY_RATE_LIMIT_BURST_SECONDS": "5"})
    proxies.append(proxy)
    await asyncio.to_thread(proxy.start)
    # the same token from three loopback addresses: a looping client and two well-behaved ones
    looping, calm, other = await asyncio.gather(
        post_from("127.0.0.2", proxy.url, CLIENT_TOKEN, 40),
        post_from("127.0.0.3", proxy.url, CLIENT_TOKEN, 4),
        post_from("127.0.0.4", proxy.url, CLIENT_TOKEN, 4),
    )
    assert calm == other == [202] * 4
    assert looping.count(202) <= 7 and looping.count(429) >= 33, looping
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/metrics") as response:
            text = await response.text()
    assert limited_count(text, "address") == looping.count(429)
    assert limited_count(text, "token") == 0
