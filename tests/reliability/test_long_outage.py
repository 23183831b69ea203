"""Reliability requirement 8 (tests/reliability/README.md): a 24-hour upstream outage under the default backoff, in virtual time.

Real Forwarders, each with its own SQLite store and ManualClock, send to one stub upstream over
loopback. Their retry waits go through the Forwarder's injectable `sleep`, which moves that
forwarder's clock instead of waiting, so a day of 503s takes about a second. The stub answers 503
until the forwarder's clock passes the end of the outage, then 202. One forwarder rides out a
whole day; twenty ride out a shorter outage (the whole day with RELIABILITY_LONG=1) to show that
they do not retry in step.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections import Counter

from aiohttp import web

from proxy.clock import ManualClock
from proxy.config import UpstreamSettings
from proxy.forwarding.stats import ForwarderStats
from proxy.storage import CountRow, JournalEntry, Store
from proxy.unleash.upstream.forwarder import Forwarder
from tests.forwarding import UPSTREAM_DEV
from tests.support import this_hour

PROXIES = 20
DAY = 24 * 3600.0
# The 20-proxy run sends ~30 requests per simulated hour per proxy over loopback: 2 h by default,
# the whole day with RELIABILITY_LONG=1.
SPREAD_OUTAGE = DAY if os.environ.get("RELIABILITY_LONG") == "1" else 2 * 3600.0
DEFAULTS = UpstreamSettings(url="http://upstream.invalid")
START = float(this_hour())  # an hour boundary
FLAGS = 5


class VirtualTime:
    """One forwarder's clock; its retry waits move the clock instead of passing real time."""

    def __init__(self) -> None:
        self.clock = ManualClock(START + 60)
        self.waits: list[float] = []
        self.attempts: list[float] = []  # the clock at each POST the upstream saw

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0)  # let the others run, as a real wait would


def outage_answer(proxies: dict[str, VirtualTime], outage: float):
    async def answer(request: web.Request, rec) -> web.Response:
        time = proxies[rec.headers["UNLEASH-APPNAME"]]
        time.attempts.append(time.clock.now())
        return web.Response(status=503 if time.clock.now() < START + outage else 202)

    return answer


async def run_outage(tmp_path, stub, make_settings, proxies: int, outage: float) -> dict[str, VirtualTime]:
    """Ingest into each proxy's store, flush through the outage, and check everything drained."""
    times = {f"proxy-{i}": VirtualTime() for i in range(proxies)}
    stub.default = outage_answer(times, outage)
    forwarders, stores = [], []
    try:
        for i, (name, time) in enumerate(times.items()):
            store = Store(tmp_path / name / "metrics-proxy.db")
            await store.open()
            stores.append(store)
            counts = [CountRow(f"app-{i}", f"flag-{f}", int(START), i + f + 1, f) for f in range(FLAGS)]
            await store.append([JournalEntry("development", START + 30, counts)])
            settings = make_settings(upstream=dict(url=stub.url, tokens={"development": UPSTREAM_DEV}, app_name=name))
            forwarder = Forwarder(settings, store, time.clock, ForwarderStats(), sleep=time.sleep)
            await forwarder.start(run_loop=False)
            forwarders.append(forwarder)

        left = await asyncio.wait_for(asyncio.gather(*(f.flush() for f in forwarders)), 120)
    finally:
        for forwarder in forwarders:
            await forwarder.stop()
        for store in stores:
            await store.close()

    # Everything drained after recovery, nothing dead-lettered or given up for age.
    assert left == [0] * proxies
    expected: Counter = Counter()
    stamp = stub.delivered()[0].body["metrics"][0]["timestamp"]
    for i in range(proxies):
        for f in range(FLAGS):
            key = ("development", f"app-{i}", f"flag-{f}", stamp)
            expected[key + ("yes",)] += i + f + 1
            expected[key + ("no",)] += f
    assert stub.delivered_totals() == +expected
    assert len(stub.delivered()) == proxies  # one batch each, delivered once

    cap, initial = DEFAULTS.retry_max, DEFAULTS.retry_initial
    for name, time in times.items():
        # Still trying at the end of the outage: no retry budget ran out, no batch aged out.
        failed = [t for t in time.attempts if t < START + outage]
        assert failed[-1] >= START + outage - cap, name
        assert time.attempts[-1] >= START + outage
        # Full jitter: the n-th wait lies in [0, min(cap, initial * 2^(n-1))].
        for n, wait in enumerate(time.waits, start=1):
            assert 0 <= wait <= min(cap, initial * 2 ** (n - 1)), (name, n, wait)
    return times


async def test_a_day_long_outage_loses_nothing_under_the_default_backoff(tmp_path, stub, make_settings):
    times = await run_outage(tmp_path, stub, make_settings, proxies=1, outage=DAY)
    cap = DEFAULTS.retry_max
    waits = times["proxy-0"].waits
    capped = [w for n, w in enumerate(waits, start=1) if DEFAULTS.retry_initial * 2 ** (n - 1) >= cap]
    assert len(capped) > 400  # a day at the cap: about 86400 / 150 attempts
    # Uniform in [0, cap]: the mean is cap/2 within 5 standard errors, and both halves are used.
    assert abs(statistics.fmean(capped) - cap / 2) < 5 * (cap / 12 ** 0.5) / len(capped) ** 0.5
    assert min(capped) < cap * 0.1 and max(capped) > cap * 0.9


async def test_twenty_proxies_do_not_retry_in_step(tmp_path, stub, make_settings):
    times = await run_outage(tmp_path, stub, make_settings, proxies=PROXIES, outage=SPREAD_OUTAGE)
    # The proxies' 10th attempts, and their first attempts after recovery, spread out in time.
    tenth = [time.attempts[9] - START for time in times.values()]
    recovered = [time.attempts[-1] - (START + SPREAD_OUTAGE) for time in times.values()]
    assert len(set(tenth)) == PROXIES and len(set(recovered)) == PROXIES
    assert statistics.pstdev(tenth) > 30.0, tenth
    assert statistics.pstdev(recovered) > 30.0, recovered
    print(f"10th attempt spread (s): stdev {statistics.pstdev(tenth):.0f}, range {min(tenth):.0f}-{max(tenth):.0f}; "
          f"recovery delay (s): stdev {statistics.pstdev(recovered):.0f}, max {max(recovered):.0f}; "
          f"attempts per proxy: {statistics.fmean(len(t.attempts) for t in times.values()):.0f}")
