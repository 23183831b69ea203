"""Reliability requirement 15 (tests/reliability/README.md): a model-based test of the buffer, with Hypothesis.

The real Store (SQLite in a temporary folder) and the real Forwarder, sending over loopback to a
stub upstream served on the machine's own event loop, go through random sequences of ingest,
fold, flush (upstream OK, failing with 503, ambiguous: applied then the connection dropped,
rejecting with 400), restart and disk full / disk freed. The model is what was acknowledged, per
flag. After every step, per flag:

    acknowledged = delivered + pending + dead-lettered

where delivered is what the upstream applied, each Idempotency-Key once (Unleash adds, so the
resend after an ambiguous outcome is the one duplicate the key exists to absorb), pending is
what the store still holds (unfolded journal, pending_counts, unsent batches) and dead-lettered
are the counts the upstream refused for good, kept in dead_letters. No part is negative, and
while the disk is full the database stays within the pages it was given.

50 examples of up to 25 steps by default; RELIABILITY_LONG=1 runs 300 of up to 50.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
from collections import Counter
from pathlib import Path

from aiohttp import web
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from proxy.clock import ManualClock
from proxy.config import Settings, UpstreamSettings
from proxy.forwarding.stats import ForwarderStats
from proxy.storage import CountRow, JournalEntry, Store
from proxy.storage.journal import decode_entry
from proxy.storage.writer import StorageUnavailable
from proxy.unleash.upstream.forwarder import Forwarder
from tests.forwarding import UPSTREAM_DEV
from tests.support import this_hour

LONG = os.environ.get("RELIABILITY_LONG") == "1"
START = float(this_hour())  # an hour boundary
FLAGS = [f"flag-{n}" for n in range(4)]


class UpstreamDown(Exception):
    """Raised by the forwarder's retry wait while the upstream is down: the send stops there,
    as it would at a shutdown during backoff, and the batch stays on disk."""


class IdempotentUpstream:
    """Scripted answers; remembers what it applied under each Idempotency-Key."""

    def __init__(self) -> None:
        self.mode = "ok"  # ok | down | ambiguous | reject
        self.applied: dict[str, Counter] = {}

    def apply(self, request_key: str, body: dict) -> None:
        if request_key not in self.applied:
            counts: Counter = Counter()
            for metric in body.get("metrics", []):
                counts[metric["featureName"]] += metric["yes"] + metric["no"]
            self.applied[request_key] = counts

    def delivered(self) -> Counter:
        total: Counter = Counter()
        for counts in self.applied.values():
            total.update(counts)
        return total

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = request.headers["Idempotency-Key"]
        if self.mode == "down":
            return web.Response(status=503)
        if self.mode == "reject":
            return web.Response(status=400, text="rejected")
        self.apply(key, body)
        if self.mode == "ambiguous":
            self.mode = "ok"  # the retry gets its 202
            request.transport.close()
        return web.Response(status=202)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/client/metrics/bulk", self.handle)
        return app


class BufferMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.folder = tempfile.TemporaryDirectory()
        self.path = Path(self.folder.name) / "metrics-proxy.db"
        self.clock = ManualClock(START + 60)
        self.upstream = IdempotentUpstream()
        self.acknowledged: Counter = Counter()
        self.full_at: int | None = None  # while "full": the page count when the bound was set
        self.policy = "refuse"
        self.dropped = 0  # counts the overflow policy deleted, as the store reported them
        self.runner = web.AppRunner(self.upstream.app())
        self.run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.run(site.start())
        port = self.runner.addresses[0][1]
        self.settings = Settings(data_dir=self.folder.name, upstream=UpstreamSettings(
            url=f"http://127.0.0.1:{port}/api", tokens={"development": UPSTREAM_DEV},
            retry_initial=0.001, retry_max=0.002, request_timeout=5.0, shutdown_flush_timeout=5.0,
        ))
        self.store: Store | None = None
        self.forwarder: Forwarder | None = None
        self.run(self.start())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def retry_wait(self, seconds: float) -> None:
        if self.upstream.mode == "down":
            raise UpstreamDown()
        await asyncio.sleep(0)

    async def start(self) -> None:
        # A full disk is the store's own bound set below what the file already holds: SQLite
        # then refuses new pages, as on a full filesystem, and ingest is refused with 503.
        limit = None if self.full_at is None else self.path.stat().st_size // 2
        self.store = Store(self.path, max_db_size=limit, overflow_policy=self.policy)
        await self.store.open()
        self.forwarder = Forwarder(self.settings, self.store, self.clock, ForwarderStats(), sleep=self.retry_wait)
        await self.forwarder.start(run_loop=False)

    async def stop(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self.store is not None:
            await self.store.close()
            if self.store.space is not None:
                self.dropped += sum(self.store.space.dropped_counts.values())

    def teardown(self) -> None:
        try:
            self.run(self.stop())
            self.run(self.runner.cleanup())
        finally:
            self.loop.close()
            self.folder.cleanup()

    # --- operations -------------------------------------------------------------------------

    @rule(counts=st.dictionaries(st.sampled_from(FLAGS), st.tuples(st.integers(0, 50), st.integers(0, 50)),
                                 min_size=1),
          hour=st.integers(0, 2))
    def ingest(self, counts, hour):
        rows = [CountRow("app", flag, int(START) + hour * 3600, yes, no) for flag, (yes, no) in counts.items()]
        try:
            self.run(self.store.append([JournalEntry("development", self.clock.now(), rows)]))
        except StorageUnavailable:
            event("ingest refused: disk full")
            return  # answered 503: not acknowledged, and the model says so
        for flag, (yes, no) in counts.items():
            self.acknowledged[flag] += yes + no

    @rule()
    def fold(self):
        self.store.fold()

    @rule(mode=st.sampled_from(["ok", "down", "ambiguous", "reject"]))
    def flush(self, mode):
        self.upstream.mode = mode
        self.clock.advance(10)
        left = self.run(self.forwarder.flush())
        event(f"flush {mode}: {'batches left' if left else 'outbox empty'}")
        self.upstream.mode = "ok"

    @rule()
    def restart(self):
        self.run(self.stop())
        self.run(self.start())

    @precondition(lambda self: self.full_at is None)
    @rule(policy=st.sampled_from(["refuse", "drop_oldest"]))
    def disk_full(self, policy):
        page_size = self.store.pragma("page_size")
        self.run(self.stop())
        self.full_at = self.path.stat().st_size // page_size + 1
        self.policy = policy
        self.run(self.start())

    @precondition(lambda self: self.full_at is not None)
    @rule()
    def disk_freed(self):
        self.run(self.stop())
        self.full_at = None
        self.run(self.start())

    # --- what the store holds ---------------------------------------------------------------

    def held(self) -> tuple[Counter, Counter]:
        """(pending, dead-lettered) per flag, read through a separate read-only connection."""
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            pending: Counter = Counter()
            for (blob,) in db.execute("SELECT entry FROM journal"):
                for row in decode_entry(blob).counts:
                    pending[row.feature_name] += row.yes + row.no
            for flag, total in db.execute("SELECT feature_name, yes + no FROM pending_counts"):
                pending[flag] += total
            dead: Counter = Counter()
            for table, counter in (("outbox_items", pending), ("dead_letters", dead)):
                for item, total in db.execute(f"SELECT item, yes + no FROM {table}"):
                    flag = json.loads(item).get("featureName")
                    if flag is not None:
                        counter[flag] += total
            return pending, dead
        finally:
            db.close()

    @invariant()
    def acknowledged_equals_delivered_plus_pending_plus_dropped(self):
        if self.store is None:
            return
        pending, dead = self.held()
        delivered = self.upstream.delivered()
        for part in (pending, dead, delivered):
            assert all(v >= 0 for v in part.values()), part
        dropped = self.dropped + (sum(self.store.space.dropped_counts.values()) if self.store.space else 0)
        state = (dict(self.acknowledged), dict(delivered), dict(pending), dict(dead), dropped)
        # The overflow policy reports what it deleted as one total, so per flag the accounted
        # parts may fall short of the acknowledged by dropped counts only.
        for flag in set(self.acknowledged) | set(pending) | set(dead) | set(delivered):
            accounted = delivered[flag] + pending[flag] + dead[flag]
            assert accounted <= self.acknowledged[flag], (flag, state)
        total = sum(delivered.values()) + sum(pending.values()) + sum(dead.values()) + dropped
        assert sum(self.acknowledged.values()) == total, state

    @invariant()
    def a_full_store_does_not_grow(self):
        if self.full_at is not None:
            assert self.store.pragma("page_count") <= self.full_at


BufferMachine.TestCase.settings = settings(
    max_examples=300 if LONG else 50,
    stateful_step_count=50 if LONG else 25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestBufferKeepsEveryAcknowledgedCountAccountedFor = BufferMachine.TestCase
