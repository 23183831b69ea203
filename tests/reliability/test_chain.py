"""Exactly once through a two-proxy chain: SDKs -> edge -> regional -> recording upstream, with the
edge killed -9 mid-load again and again (issue 3).

What "exact" can mean here. The edge answers 202 only after a post is committed, so a 202-acknowledged
post must reach the upstream exactly once. A post answered otherwise, or never sent (the edge was
down), must never arrive. A post whose connection broke while the edge handled it has an unknown
outcome: the edge may or may not have committed it before it died. Retrying such a post would not
make the count exact (a post committed just before the kill would then count twice, and the SDK
contract has no key to tell), so the load never retries; instead every post counts flags of its
own (tests/reliability/sdk_load.py), and the final upstream totals are checked post by post:
acknowledged exactly once, refused never, unknown either never or exactly once, and nothing else.

Where a chain could count twice is the edge resending a batch the regional already committed: the
edge was killed after the regional's commit but before it recorded the 2xx. Random kills hit that
window only sometimes, so the first kill makes it happen: a loopback relay between the two
(tests/reliability/relay.py) holds the regional's 2xx until the edge is dead. The restarted edge
resends the batch under the same Idempotency-Key, and the regional's
metrics_proxy_idempotent_replays_total must move while the totals stay exact. The further kills come
at random moments, some right after a batch left the edge while the relay slows the regional's answers,
and the last ones with the edge posting to the regional directly (no relay), as deployed. Once the
relayed phase has drained, the regional's replays must equal the resent 2xx exchanges the relay saw.

CHAIN_CYCLES sets the number of random kills through the relay (default 3; with the 2 direct ones
the test takes about 15 s).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import aiohttp

from tests.forwarding import UPSTREAM_DEV
from tests.reliability.relay import Relay
from tests.reliability.sdk_load import APP_NAME, Outcome, SdkLoad, mismatches
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, PROD_TOKEN, ProxyProcess

CYCLES = int(os.environ.get("CHAIN_CYCLES", "3"))  # random kills with the relay between edge and regional
DIRECT_KILLS = 2
EDGE_TOKEN = "default:development.edge-to-regional"  # the edge's upstream token, a client token of the regional


def regional_env(upstream_url: str) -> dict[str, str]:
    return {
        "METRICS_PROXY_CLIENT_TOKENS": f"{CLIENT_TOKEN},{PROD_TOKEN},{EDGE_TOKEN}",
        "METRICS_PROXY_UPSTREAM_URL": upstream_url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={UPSTREAM_DEV}",
        "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "0.3",
        "METRICS_PROXY_UPSTREAM_RETRY_INITIAL": "0.05",
        "METRICS_PROXY_UPSTREAM_RETRY_MAX": "0.5",
    }


def edge_env(regional_api_url: str) -> dict[str, str]:
    return {
        "METRICS_PROXY_UPSTREAM_URL": regional_api_url,
        "METRICS_PROXY_UPSTREAM_TOKENS": f"development={EDGE_TOKEN}",
        "METRICS_PROXY_UPSTREAM_FLUSH_INTERVAL": "0.5",
        "METRICS_PROXY_UPSTREAM_RETRY_INITIAL": "0.05",
        "METRICS_PROXY_UPSTREAM_RETRY_MAX": "0.5",
        "METRICS_PROXY_UPSTREAM_REQUEST_TIMEOUT": "10",
    }


async def until(condition, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"{what}: not reached in {timeout} s"
        await asyncio.sleep(0.02)


async def replays(proxy: ProxyProcess) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(proxy.url + "/internal-backstage/prometheus") as response:
            text = await response.text()
    for line in text.splitlines():
        if line.startswith("metrics_proxy_idempotent_replays_total "):
            return float(line.split()[1])
    raise AssertionError("no metrics_proxy_idempotent_replays_total in the exposition")


async def flush(proxy: ProxyProcess) -> dict:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        async with session.post(proxy.url + "/internal-backstage/flush",
                                headers={"Authorization": ADMIN_TOKEN}) as response:
            assert response.status == 200, await response.text()
            return await response.json()


async def drain(edge: ProxyProcess, regional: ProxyProcess, timeout: float = 60.0) -> None:
    """Flush the edge (all it committed is then committed at the regional), then the regional."""
    deadline = asyncio.get_running_loop().time() + timeout
    idle = {"finished": True, "batchesLeft": 0}
    while (await flush(edge), await flush(regional)) != (idle, idle):
        assert asyncio.get_running_loop().time() < deadline, "the chain did not drain in time"


def arrived_totals(stub, once_per_key: bool = False) -> Counter:
    """(flag, "yes"|"no") -> what the upstream accepted; once_per_key counts a resent batch once."""
    totals: Counter = Counter()
    deliveries = stub.delivered()
    if once_per_key:
        deliveries = list({rec.key: rec for rec in deliveries}.values())
    for rec in deliveries:
        for m in rec.body["metrics"]:
            assert (m["environment"], m["appName"]) == ("development", APP_NAME)
            totals[m["featureName"], "yes"] += m["yes"]
            totals[m["featureName"], "no"] += m["no"]
    return totals


async def start_chain(tmp_path, stub, aiohttp_server, proxies) -> tuple[ProxyProcess, Relay, ProxyProcess]:
    """regional -> stub, and edge -> relay -> regional; both real processes."""
    for name in ("regional", "edge"):
        (tmp_path / name).mkdir()
    regional = ProxyProcess(tmp_path / "regional" / "data", extra_env=regional_env(stub.url))
    proxies.append(regional)
    await asyncio.to_thread(regional.start)
    relay = Relay(regional.url)
    relay_server = await aiohttp_server(relay.app())
    edge = ProxyProcess(tmp_path / "edge" / "data", extra_env=edge_env(str(relay_server.make_url("/api"))))
    proxies.append(edge)
    await asyncio.to_thread(edge.start)
    return regional, relay, edge


def resent_keys(relay: Relay) -> set[str]:
    return {x.key for x in relay.exchanges if len(relay.keys_answered(x.key)) > 1}


def replays_seen_by(relay: Relay) -> int:
    """Each 2xx after a key's first one answered a resend of a committed batch: a regional replay."""
    return sum(len([s for s in relay.keys_answered(key) if 200 <= s < 300]) - 1
               for key in {x.key for x in relay.exchanges})


async def restarted_with_posts(edge: ProxyProcess, load: SdkLoad, kill_at) -> None:
    """Once the edge acknowledges posts again: await kill_at(), kill -9, restart on the same data."""
    mark = len(load.posts)
    await until(lambda: load.acknowledged_since(mark) >= 5, 30, "posts acknowledged after a restart")
    await kill_at()
    await asyncio.to_thread(edge.kill)
    await asyncio.sleep(random.uniform(0, 0.3))  # posts meanwhile find no proxy
    await asyncio.to_thread(edge.start)


async def test_killing_the_edge_mid_load_loses_and_doubles_nothing(tmp_path, stub, aiohttp_server, proxies):
    regional, relay, edge = await start_chain(tmp_path, stub, aiohttp_server, proxies)
    load = SdkLoad(edge.url, prefix="relayed")
    load.start()
    try:
        # The deterministic kill: the regional committed a batch, the edge dies before the 2xx.
        replays_before = await replays(regional)
        relay.hold_next()
        await until(relay.held.is_set, 30, "a bulk post committed at the regional")
        await asyncio.to_thread(edge.kill)
        relay.release.set()
        await asyncio.to_thread(edge.start)  # same port, same data directory
        held_key = relay.held_key
        await until(lambda: len(relay.keys_answered(held_key)) >= 2, 30, "the held batch resent")
        assert all(200 <= status < 300 for status in relay.keys_answered(held_key))
        assert await replays(regional) > replays_before

        async def at_random_through_the_relay() -> None:
            relay.max_delay = random.choice([0.0, 0.3])  # sometimes a slow regional
            if random.random() < 0.5:  # right after a batch left the edge
                relay.bulk_arrived.clear()
                await until(relay.bulk_arrived.is_set, 30, "a batch sent by the edge")
                await asyncio.sleep(random.uniform(0, 0.05))
            else:
                await asyncio.sleep(random.uniform(0.0, 1.0))

        for _ in range(CYCLES):
            await restarted_with_posts(edge, load, at_random_through_the_relay)
        mark = len(load.posts)
        await until(lambda: load.acknowledged_since(mark) >= 5, 30, "posts acknowledged after the last restart")
    finally:
        await load.stop()
    relay.max_delay = 0.0
    await drain(edge, regional)  # every exchange through the relay is now on record
    assert await replays(regional) == replays_before + replays_seen_by(relay)

    # The relay only watches; the last kills run on a direct edge -> regional link, as deployed.
    assert await asyncio.to_thread(edge.terminate) == 0
    edge.extra_env["METRICS_PROXY_UPSTREAM_URL"] = regional.url + "/api"
    await asyncio.to_thread(edge.start)
    direct = SdkLoad(edge.url, prefix="direct")
    direct.start()
    try:
        for _ in range(DIRECT_KILLS):
            await restarted_with_posts(edge, direct, lambda: asyncio.sleep(random.uniform(0.0, 1.0)))
        mark = len(direct.posts)
        await until(lambda: direct.acknowledged_since(mark) >= 5, 30, "posts acknowledged after the last restart")
    finally:
        await direct.stop()
    await drain(edge, regional)

    posts = load.posts + direct.posts
    problems = mismatches(posts, arrived_totals(stub))
    assert not problems, f"{len(problems)} posts disagree with the upstream, e.g. {problems[:5]}"
    acknowledged = [p for p in posts if p.outcome is Outcome.ACKNOWLEDGED]
    assert len(acknowledged) >= 5 * (CYCLES + DIRECT_KILLS + 2)
    counts = sum(yes + no for p in acknowledged for yes, no in p.toggles.values())
    unknown = sum(1 for p in posts if p.outcome is Outcome.UNKNOWN)
    print(f"chain: {len(posts)} posts, {len(acknowledged)} acknowledged ({counts} counts), {unknown} unknown; "
          f"{len(relay.exchanges)} bulk posts through the relay ({len(resent_keys(relay))} batches resent), "
          f"{await replays(regional):.0f} replays at the regional, {len(stub.delivered())} regional->upstream posts")
    assert await asyncio.to_thread(edge.terminate) == 0
    assert await asyncio.to_thread(regional.terminate) == 0


async def test_an_answer_lost_between_live_proxies_is_resent_and_counted_once(tmp_path, stub, aiohttp_server,
                                                                               proxies):
    """No kill: the regional commits a batch and the connection resets before its 2xx reaches the
    edge. The edge retries under the same key and the regional answers it without counting again."""
    regional, relay, edge = await start_chain(tmp_path, stub, aiohttp_server, proxies)
    relay.drop_next = True
    load = SdkLoad(edge.url, workers=2)
    load.start()
    try:
        await until(lambda: resent_keys(relay), 30, "a batch whose answer was lost resent")
    finally:
        await load.stop()
    await drain(edge, regional)

    assert load.count(Outcome.ACKNOWLEDGED) == len(load.posts) > 0
    problems = mismatches(load.posts, arrived_totals(stub))
    assert not problems, f"{len(problems)} posts disagree with the upstream, e.g. {problems[:5]}"
    (key,) = resent_keys(relay)
    assert len(relay.keys_answered(key)) == 2
    assert await replays(regional) == 1
    assert await asyncio.to_thread(edge.terminate) == 0
    assert await asyncio.to_thread(regional.terminate) == 0


async def test_a_regional_killed_after_committing_still_knows_the_key_of_the_resend(tmp_path, stub, aiohttp_server,
                                                                                    proxies):
    """Keys are committed with the counts, not kept in memory: the regional commits a batch and is
    killed -9, then the edge (killed before it heard the 2xx) resends the batch to the restarted
    regional, which must recognise the key."""
    regional, relay, edge = await start_chain(tmp_path, stub, aiohttp_server, proxies)
    load = SdkLoad(edge.url, workers=2)
    load.start()
    try:
        relay.hold_next()
        await until(relay.held.is_set, 30, "a bulk post committed at the regional")
        await asyncio.to_thread(regional.kill)
        await asyncio.to_thread(regional.start)
        await asyncio.to_thread(edge.kill)
        relay.release.set()
        await asyncio.to_thread(edge.start)
        await until(lambda: len(relay.keys_answered(relay.held_key)) >= 2, 30, "the held batch resent")
    finally:
        await load.stop()
    await drain(edge, regional)

    assert await replays(regional) >= 1  # a new process: only resends after the restart count here
    # The killed regional may itself have resent a batch to the upstream (which, like Unleash, does
    # not deduplicate): count each of its batches once to judge what the regional committed.
    problems = mismatches(load.posts, arrived_totals(stub, once_per_key=True))
    assert not problems, f"{len(problems)} posts disagree with the upstream, e.g. {problems[:5]}"
    assert await asyncio.to_thread(edge.terminate) == 0
    assert await asyncio.to_thread(regional.terminate) == 0
