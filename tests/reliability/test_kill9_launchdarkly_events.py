"""Reliability requirement 1 for LaunchDarkly's SDK events: conservation under kill -9 with forwarding.

A real `python -m proxy serve` takes concurrent SDK event posts (each post one event of its own,
under a Payload-ID of its own) and sends every 0.2 s to an events stand-in served on loopback by
this test process; it is SIGKILLed at random points and restarted, 10 times (50 with
RELIABILITY_LONG=1). After the last restart and its shutdown flush, the events the upstream applied
(each X-LaunchDarkly-Payload-ID once, as LaunchDarkly deduplicates) are exactly the acknowledged ones,
plus at most once each of those whose answer was lost in the kill; a refused one never arrives.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import aiohttp

from tests.ld_events_support import SDK_KEY, config_file, sdk_headers
from tests.ld_events_upstream import start_events_upstream, stop_events_upstream
from tests.reliability.ledger import ACKED, REFUSED, UNKNOWN
from tests.support import ProxyProcess

CYCLES = 50 if os.environ.get("RELIABILITY_LONG") == "1" else 10
WORKERS = 8


async def load(url: str, outcomes: dict[str, str], stop: asyncio.Event, cycle: int, worker: int) -> None:
    """One SDK posting one new event at a time until `stop`, or until the proxy goes away."""
    async with aiohttp.ClientSession() as session:
        n = 0
        while not stop.is_set():
            name = f"c{cycle}-w{worker}-r{n}"
            n += 1
            outcomes[name] = UNKNOWN
            body = [{"kind": "custom", "key": "load", "creationDate": 1, "contextKeys": {"user": name}}]
            try:
                async with session.post(url + "/bulk", json=body, headers=sdk_headers(SDK_KEY, payload_id=name)) as r:
                    status = r.status
            except (TimeoutError, aiohttp.ClientError):
                return  # the proxy died under this post: its outcome stays unknown
            outcomes[name] = ACKED if status == 202 else REFUSED


async def test_kill_9_under_load_delivers_every_acknowledged_event_once(tmp_path):
    upstream = await start_events_upstream()
    config = config_file(tmp_path / "proxy.toml", upstream.url, flush_interval=0.2)
    proxy = ProxyProcess(tmp_path / "data", config=config, extra_env={"METRICS_PROXY_FOLD_INTERVAL": "0.1"})
    outcomes: dict[str, str] = {}
    rng = random.Random(20261205)
    try:
        for cycle in range(CYCLES):
            await asyncio.to_thread(proxy.start)
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(proxy.url, outcomes, stop, cycle, w)) for w in range(WORKERS)]
            await asyncio.sleep(rng.uniform(0.2, 0.9))
            await asyncio.to_thread(proxy.kill)  # SIGKILL: no shutdown code runs
            stop.set()
            await asyncio.gather(*workers)
        await asyncio.to_thread(proxy.start)
        acked = {name for name, outcome in outcomes.items() if outcome == ACKED}
        deadline = asyncio.get_running_loop().time() + 30
        while not acked <= arrived(upstream):
            assert asyncio.get_running_loop().time() < deadline, (len(acked - arrived(upstream)), proxy.log()[-2000:])
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(proxy.terminate) == 0
    finally:
        proxy.stop()
        await stop_events_upstream(upstream)
    applied = Counter(e["contextKeys"]["user"] for e in upstream.accepted_events())
    raw = Counter(e["contextKeys"]["user"] for e in upstream.accepted_events(once_per_payload_id=False))
    tally = Counter(outcomes.values())
    assert tally[ACKED] > 100 * CYCLES // 10, tally  # the load was real
    for name, outcome in outcomes.items():
        allowed = {ACKED: {1}, REFUSED: {0}, UNKNOWN: {0, 1}}[outcome]
        assert applied[name] in allowed, (name, outcome, applied[name])
    assert set(applied) <= set(outcomes)
    assert all(raw[name] >= 1 for name in outcomes if outcomes[name] == ACKED)
    secrets = proxy.log()
    assert SDK_KEY not in secrets


def arrived(upstream) -> set[str]:
    return {e["contextKeys"]["user"] for e in upstream.accepted_events()}
