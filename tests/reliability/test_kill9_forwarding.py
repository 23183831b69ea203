"""Reliability requirement 1 (tests/reliability/README.md): conservation under kill -9 WITH forwarding.

A real `python -m proxy serve` takes concurrent SDK load and forwards every 0.2 s to a stub
upstream served on loopback by this test process; it is SIGKILLed at random points and
restarted, 10 times (50 with RELIABILITY_LONG=1). After the last restart and a drain, every
count the proxy answered 202 for must have reached the upstream.

Why the check is exact: every request carries a flag name of its own, so each request's fate is
read off the upstream separately. A request answered 202 must arrive exactly once; one refused
must never arrive; one still in flight at the kill (its answer lost) may be stored or not, so
it arrives exactly once or not at all. "Exactly once" counts each Idempotency-Key once: a kill
after the upstream applied a batch but before the proxy deleted it makes the proxy resend that
batch under the same key, which an idempotent upstream applies once. The raw totals (every 2xx
body) must still be >= the acknowledged ones; the resends are reported.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter

import aiohttp

from tests.forwarding import UPSTREAM_DEV, upstream_env
from tests.reliability.ledger import ACKED, REFUSED, UNKNOWN, Ledger, load
from tests.support import ADMIN_TOKEN, CLIENT_TOKEN, ProxyProcess

CYCLES = 50 if os.environ.get("RELIABILITY_LONG") == "1" else 10
WORKERS = 8


async def drain(proxy: ProxyProcess) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": ADMIN_TOKEN}) as session:
        for _ in range(20):
            async with session.post(proxy.url + "/internal-backstage/flush") as response:
                assert response.status == 200, await response.text()
                report = await response.json()
            if report["finished"] and report["batchesLeft"] == 0:
                return
        raise AssertionError(f"the outbox did not drain: {report}")


def upstream_totals(stub) -> tuple[Counter, Counter]:
    """flag -> yes over every 2xx body (raw), and counting each Idempotency-Key once (applied)."""
    raw: Counter = Counter()
    applied: Counter = Counter()
    seen: set[str] = set()
    for rec in stub.delivered():
        first = rec.key not in seen
        seen.add(rec.key)
        for metric in rec.body["metrics"]:
            raw[metric["featureName"]] += metric["yes"]
            if first:
                applied[metric["featureName"]] += metric["yes"]
    return raw, applied


async def test_kill_9_under_load_with_forwarding_conserves_every_acknowledged_count(tmp_path, stub):
    env = {**upstream_env(stub.url), "METRICS_PROXY_FOLD_INTERVAL": "0.1"}
    proxy = ProxyProcess(tmp_path / "data", extra_env=env)
    ledger = Ledger()
    rng = random.Random(20261122)
    delivered_under_load = []
    try:
        for cycle in range(CYCLES):
            await asyncio.to_thread(proxy.start)
            stop = asyncio.Event()
            workers = [asyncio.create_task(load(proxy.url, ledger, stop, cycle, w)) for w in range(WORKERS)]
            await asyncio.sleep(rng.uniform(0.2, 0.9))
            await asyncio.to_thread(proxy.kill)  # SIGKILL: no shutdown code runs
            stop.set()
            await asyncio.gather(*workers)
            delivered_under_load.append(len(stub.delivered()))
        await asyncio.to_thread(proxy.start)
        await drain(proxy)
        assert await asyncio.to_thread(proxy.terminate) == 0
    finally:
        proxy.stop()

    # §9 item 11, the log part: neither the SDK's token nor the upstream's appears in the log.
    log = proxy.log()
    assert "replayed" in log and CLIENT_TOKEN.split(".")[-1] not in log and UPSTREAM_DEV.split(".")[-1] not in log

    raw, applied = upstream_totals(stub)
    outcomes = ledger.outcomes()
    assert outcomes[ACKED] > 100 * CYCLES // 10, outcomes
    assert delivered_under_load[-1] > 0, "the forwarder must have been sending while the kills came"
    assert set(raw) <= set(ledger.posts), "the upstream got a count nobody sent"
    wrong = []
    for flag, (yes, outcome) in ledger.posts.items():
        allowed = ledger.allowed(flag)
        if applied[flag] not in allowed or raw[flag] < applied[flag]:
            wrong.append((flag, yes, outcome, applied[flag], raw[flag]))
    assert not wrong, wrong[:20]
    acked = sum(yes for yes, outcome in ledger.posts.values() if outcome == ACKED)
    assert sum(raw.values()) >= acked
    in_doubt = [f for f, (_, o) in ledger.posts.items() if o == UNKNOWN]
    print(f"{CYCLES} kills: {outcomes[ACKED]} requests acknowledged ({acked} counts), {len(in_doubt)} in flight at a "
          f"kill ({sum(1 for f in in_doubt if applied[f])} of them stored), {outcomes[REFUSED]} refused; "
          f"{len(stub.delivered())} upstream posts, {sum(raw.values()) - sum(applied.values())} counts resent "
          f"under an already-applied Idempotency-Key")
