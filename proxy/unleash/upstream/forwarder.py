"""The Unleash forwarder: pending counts -> outbox batches -> POST {upstream}/client/metrics/bulk.

Every flush_interval the store is folded, each environment's pending rows are cut into outbox
batches (proxy/unleash/store/pending.py), and the shared delivery mechanism sends them with the
environment's upstream token (proxy/forwarding/delivery.py has the outcome table). Custom metrics,
whose values replace rather than add, go to {upstream}/client/metrics/custom on the same tick.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web

from proxy.clock import Clock
from proxy.config import Settings
from proxy.forwarding import cycle
from proxy.forwarding.delivery import Delivery, RetryPolicy, new_batch_id
from proxy.forwarding.stats import ForwarderStats
from proxy.storage import StorageUnavailable, Store
from proxy.storage.outbox import Batch, Outbox
from proxy.unleash.store import custom_metrics, pending
from proxy.unleash.upstream import session
from proxy.unleash.upstream.payload import encode_body, make_chunker
from proxy.upstream.client import SendResult, UpstreamClient

log = logging.getLogger(__name__)

BULK_PATH = "/client/metrics/bulk"
CUSTOM_PATH = "/client/metrics/custom"
CUSTOM_UNSUPPORTED = "custom_metrics_unsupported"  # outbox state key, set after a 404
CUT_ROWS = 5000  # pending rows per cut transaction: bounds how long ingest waits on one cut
MIN_CUT_ROWS = 25
# Of the reserve above the ingest high-water mark, what the cut may fill. The rest stays for
# settling the batches cut: a split writes its halves at the end of the items table while its
# parent's pages come free only once empty, a dead letter is a new row, an attempt's error grows
# its row. A cut into the whole reserve left no page for them, and a full store whose upstream
# answered 413 or 400 could never drain.
CUT_RESERVE_SHARE = 0.5


class Forwarder:
    def __init__(self, settings: Settings, store: Store, clock: Clock, stats: ForwarderStats,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep, client: UpstreamClient | None = None) -> None:
        assert settings.upstream is not None
        self.settings = settings.upstream
        self.store = store
        self.clock = clock
        self.stats = stats
        self.outbox = Outbox(store)
        policy = RetryPolicy(self.settings.retry_initial, self.settings.retry_max,
                             self.settings.auth_retry_interval, self.settings.max_in_flight)
        self.delivery = Delivery(self.outbox, self._send_once, policy, clock, stats, sleep)
        # The app's shared client, opened and closed by its owner (proxy/unleash/upstream/session.py);
        # without one (`metrics-proxy flush --one-shot`, tests) the forwarder opens and closes its own.
        self._own_client = client is None
        self.client = client or session.new_client(self.settings, clock)
        self.instance_id = ""
        self._loop: asyncio.Task | None = None
        self._cut_blocked: set[str] = set()  # environments whose last cut the full store refused
        self._custom_failing = False  # logged once per outage of the custom-metrics endpoint

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, run_loop: bool = True) -> None:
        self.instance_id = session.instance_id(self.settings, self.store)
        if self._own_client:
            await self.client.open(session.identity(self.settings, self.instance_id))
        for env in self.outbox.environments():
            self.outbox.clear_pause(env)  # tokens may have changed since the last run: try again
        if run_loop:
            self._loop = asyncio.create_task(self._run(), name="upstream-forwarder")

    async def _run(self) -> None:
        # Batches persisted by a previous run (a crash mid-send) go out first, under their ids.
        await cycle.tick_every(self.tick, self.settings.flush_interval, "upstream")

    async def stop(self) -> None:
        """One last flush within shutdown_flush_timeout; what is not delivered stays on disk."""
        try:
            await cycle.final_flush(self._loop, self.flush, self.settings.shutdown_flush_timeout, self.outbox,
                                    "upstream")
        finally:
            await self.delivery.cancel()
            if self._own_client:
                await self.client.close()

    # --- cutting and draining ---------------------------------------------------------------

    async def tick(self) -> None:
        """Fold, cut every environment's pending counts into batches, and start its drain."""
        await self.store.fold_in_chunks()
        now = self.clock.now()
        for env in self.store.on_writer(pending.environments):
            if env not in self.settings.tokens:
                if env not in self.stats.environments_without_token:
                    log.error(
                        "no upstream token for environment %r: its counts stay pending until one is "
                        "configured in upstream.tokens", env,
                    )
                    self.stats.environments_without_token.add(env)
                continue
            await self._cut(env, now, make_chunker(env, self.settings.max_body_bytes))
            self.delivery.drain(env)
        await self._send_custom_metrics()

    async def _cut(self, env: str, now: float, chunker: pending.Chunker) -> None:
        """Cut the environment's pending counts into batches, in bounded transactions.

        A full store refuses a large cut (a batch item takes more room than its pending row):
        then cut smaller. The cut may use a share of the reserve above the ingest high-water
        mark (CUT_RESERVE_SHARE; settling the batches may use all of it), and delivering what was
        cut frees room for the next cut, so a full store still drains. When folds have filled
        more than that share and no batch waits to free room, the cut takes the whole reserve."""
        rows, share = CUT_ROWS, CUT_RESERVE_SHARE
        while True:
            try:
                with self.store.reserve(share):
                    more = self.store.write(pending.cut, env, now, chunker, new_batch_id, rows,
                                            self.settings.instance_refresh_interval)[1]
            except StorageUnavailable as exc:
                if rows > MIN_CUT_ROWS and exc.disk_full:
                    rows = max(MIN_CUT_ROWS, rows // 4)
                    continue
                if exc.disk_full and share < 1.0 and self.outbox.pending_batch_count() == 0:
                    share = 1.0
                    continue
                if env not in self._cut_blocked:  # once until a cut of it succeeds again
                    log.error("could not cut pending counts of %r into batches (kept pending, retried every "
                              "flush interval): %s", env, exc)
                self._cut_blocked.add(env)
                return
            self._cut_blocked.discard(env)
            if not more:
                return
            await asyncio.sleep(0)  # let ingest commit between bounded cuts

    async def flush(self) -> int:
        """Cut and send now; returns when every drain is idle. Returns the batches left on disk."""
        while True:
            await self.tick()
            delivered_before = self.stats.batches_delivered
            await self.delivery.idle()
            left = self.outbox.pending_batch_count()
            # A cut stopped by a full store can go on once delivered batches freed their room.
            if not self._cut_blocked or left:
                return left
            if self.stats.batches_delivered == delivered_before:
                return left

    async def _send_once(self, batch: Batch) -> SendResult:
        token = self.settings.tokens[batch.environment]
        return await self.client.post(BULK_PATH, token, encode_body(batch.items), idempotency_key=batch.id,
                                      compress=self.settings.compress)

    # --- custom metrics -----------------------------------------------------------------------

    async def _send_custom_metrics(self) -> None:
        """Send the latest value of every changed custom-metric series to {url}/client/metrics/custom.

        Values replace rather than add, so a resend is harmless: a failure is simply retried on the
        next tick. Unleash 8.1 removed the endpoint: its 404 is recorded once (persisted) and the
        proxy keeps serving custom metrics locally without retrying."""
        if not self.settings.tokens or self.outbox.state(CUSTOM_UNSUPPORTED) is not None:
            return
        rows = self.store.on_writer(custom_metrics.pending_custom_metrics)
        if not rows:
            return
        body = msgspec.json.encode(
            {"metrics": [{"name": name, "value": value, "labels": json.loads(labels)} for name, labels, value, _ in rows]}
        )
        token = self.settings.tokens[min(self.settings.tokens)]
        result = await self.client.post(CUSTOM_PATH, token, body, idempotency_key=new_batch_id())
        self.stats.requests[result.label] += 1
        if result.status is not None and 200 <= result.status < 300:
            self.store.write(custom_metrics.custom_metrics_sent, rows)
            self._custom_failing = False
        elif result.status == 404:
            log.warning("the upstream has no %s (404; Unleash 8.1 removed it): custom metrics stay local only",
                        CUSTOM_PATH)
            self.outbox.set_state(CUSTOM_UNSUPPORTED, str(self.clock.now()))
            self.store.on_writer(custom_metrics.drop_pending_custom_metrics)
        elif not self._custom_failing:
            self._custom_failing = True
            log.warning("sending custom metrics failed (%s); retried every flush interval", result.error)


def cleanup_context(forwarder: Forwarder):
    """For app.cleanup_ctx, appended after the store's: it stops (final flush) before the store closes."""

    async def forwarder_ctx(app: web.Application) -> AsyncIterator[None]:
        if forwarder.store.writer is None:  # the database did not open: nothing to forward
            yield
            return
        await forwarder.start()
        yield
        await forwarder.stop()

    return forwarder_ctx
