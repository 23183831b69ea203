"""The upstream forwarder: pending counts -> persisted batches -> POST /client/metrics/bulk.

Every flush_interval the store is folded, each environment's pending rows are cut into persisted
batches (storage/outbox.py), and one drain task per environment sends its batches oldest first with
up to max_in_flight requests at once. A batch is deleted only after a 2xx, so whatever happens
(crash, SIGTERM, outage) a count is pending, in a batch on disk, delivered, or dead-lettered.

Outcomes: 2xx delivered; 413 and 400 split the batch in halves until the rejected items are
alone, which go to dead_letters; 401/403/404 pause the environment (batches kept) for
auth_retry_interval; 429/408/5xx/network errors retry with capped full-jitter backoff and no time
budget, Retry-After being a lower bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from aiohttp import web
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_never

from proxy.clock import Clock
from proxy.config import Settings
from proxy.forwarding.stats import ForwarderStats
from proxy.storage import Store
from proxy.storage.outbox import (
    Batch,
    Outbox,
    custom_metrics_sent,
    drop_pending_custom_metrics,
    pending_custom_metrics,
)
from proxy.unleash.upstream.payload import encode_body, halves, make_chunker
from proxy.upstream.client import SendResult, UpstreamClient

log = logging.getLogger(__name__)


class _Retryable(Exception):
    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


CUSTOM_PATH = "/client/metrics/custom"
CUSTOM_UNSUPPORTED = "custom_metrics_unsupported"  # forwarder_state key, set after a 404
CUT_ROWS = 5000  # pending rows per cut transaction: bounds how long ingest waits on one cut
MIN_CUT_ROWS = 25


def new_batch_id() -> str:
    return uuid.uuid4().hex


class Forwarder:
    def __init__(self, settings: Settings, store: Store, clock: Clock, stats: ForwarderStats,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        assert settings.upstream is not None
        # Waits between retries go through `sleep`, so a test can run a 24 h outage on a clock it
        # moves (tests/reliability/test_long_outage.py) instead of waiting for it.
        self.sleep = sleep
        self.settings = settings.upstream
        self.store = store
        self.clock = clock
        self.stats = stats
        self.outbox = Outbox(lambda: store.db)
        self.client: UpstreamClient | None = None
        self.instance_id = ""
        self._paused_until: dict[str, float] = {}
        self._pause_logged: dict[str, int | None] = {}  # env -> status last logged
        self._in_flight: set[int] = set()  # batch seqs being sent
        self._drains: dict[str, asyncio.Task] = {}
        self._loop: asyncio.Task | None = None
        self._cut_blocked: set[str] = set()  # environments whose last cut the full store refused
        self._custom_failing = False  # logged once per outage of the custom-metrics endpoint

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, run_loop: bool = True) -> None:
        self.instance_id = self.outbox.stable_value(
            "instance_id", lambda: f"{self.settings.app_name}@{uuid.uuid4().hex[:12]}"
        )
        for env in self.outbox.environments():
            self.outbox.clear_pause(env)  # tokens may have changed since the last run: try again
        self.client = UpstreamClient(self.settings, self.instance_id, self.clock)
        await self.client.open()
        if run_loop:
            self._loop = asyncio.create_task(self._run(), name="upstream-forwarder")

    async def _run(self) -> None:
        # Batches persisted by a previous run (a crash mid-send) go out first, under their ids.
        while True:
            try:
                await self.tick()
            except sqlite3.Error as exc:  # e.g. disk full while cutting: nothing moved, try again later
                log.error("cutting upstream batches failed, will retry: %s", exc)
            await asyncio.sleep(self.settings.flush_interval)

    async def stop(self) -> None:
        """One last flush within shutdown_flush_timeout; what is not delivered stays on disk."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
        try:
            await asyncio.wait_for(self.flush(), self.settings.shutdown_flush_timeout)
        except TimeoutError:
            log.warning(
                "shutdown flush did not finish in %.0f s; %d batches stay on disk for the next start",
                self.settings.shutdown_flush_timeout, self.outbox.pending_batch_count(),
            )
        except sqlite3.Error as exc:
            log.error("shutdown flush failed; what was not sent stays on disk: %s", exc)
        finally:
            for task in self._drains.values():
                task.cancel()
            await asyncio.gather(*self._drains.values(), return_exceptions=True)
            if self.client is not None:
                await self.client.close()

    # --- cutting and draining ---------------------------------------------------------------

    async def tick(self) -> None:
        """Fold, cut every environment's pending counts into batches, and start its drain."""
        self.store.fold()
        now = self.clock.now()
        for env in self.outbox.environments():
            if env not in self.settings.tokens:
                if env not in self.stats.environments_without_token:
                    log.error(
                        "no upstream token for environment %r: its counts stay pending until one is "
                        "configured in upstream.tokens", env,
                    )
                    self.stats.environments_without_token.add(env)
                continue
            await self._cut(env, now, make_chunker(env, self.settings.max_body_bytes))
            if self._is_paused(env, now):
                continue
            drain = self._drains.get(env)
            if drain is None or drain.done():
                self._drains[env] = asyncio.create_task(self._drain(env), name=f"drain-{env}")
        await self._send_custom_metrics()

    async def _send_custom_metrics(self) -> None:
        """Send the latest value of every changed custom-metric series to {url}/client/metrics/custom.

        Values replace rather than add, so a resend is harmless: a failure is simply retried on the
        next tick. Unleash 8.1 removed the endpoint: its 404 is recorded once (persisted) and the
        proxy keeps serving custom metrics locally without retrying."""
        if not self.settings.tokens or self.outbox.state(CUSTOM_UNSUPPORTED) is not None:
            return
        assert self.client is not None
        db = self.store.db
        rows = pending_custom_metrics(db)
        if not rows:
            return
        body = msgspec.json.encode(
            {"metrics": [{"name": name, "value": value, "labels": json.loads(labels)} for name, labels, value, _ in rows]}
        )
        token = self.settings.tokens[min(self.settings.tokens)]
        result = await self.client.post(token, new_batch_id(), body, path=CUSTOM_PATH)
        self.stats.requests[result.label] += 1
        if result.status is not None and 200 <= result.status < 300:
            custom_metrics_sent(db, rows)
            self._custom_failing = False
        elif result.status == 404:
            log.warning("the upstream has no %s (404; Unleash 8.1 removed it): custom metrics stay local only",
                        CUSTOM_PATH)
            self.outbox.set_state(CUSTOM_UNSUPPORTED, str(self.clock.now()))
            drop_pending_custom_metrics(db)
        elif not self._custom_failing:
            self._custom_failing = True
            log.warning("sending custom metrics failed (%s); retried every flush interval", result.error)

    async def _cut(self, env: str, now: float, chunker) -> None:
        """Cut the environment's pending counts into batches, in bounded transactions.

        A full store refuses a large cut (a batch item takes more room than its pending row):
        then cut smaller. The cut may use the reserve above the ingest high-water mark, and
        delivering what was cut frees room for the next cut, so a full store still drains."""
        rows = CUT_ROWS
        while True:
            try:
                with self.store.reserve():
                    more = self.outbox.cut(env, now, chunker, new_batch_id, max_rows=rows,
                                           instance_refresh=self.settings.instance_refresh_interval)[1]
            except sqlite3.OperationalError as exc:
                if rows > MIN_CUT_ROWS and "full" in str(exc):
                    rows = max(MIN_CUT_ROWS, rows // 4)
                    continue
                self._cut_blocked.add(env)
                log.error("could not cut pending counts of %r into batches (kept pending): %s", env, exc)
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
            while running := [t for t in self._drains.values() if not t.done()]:
                await asyncio.wait(running)
            left = self.outbox.pending_batch_count()
            # A cut stopped by a full store can go on once delivered batches freed their room.
            if not self._cut_blocked or left:
                return left
            if self.stats.batches_delivered == delivered_before:
                return left

    def _is_paused(self, env: str, now: float) -> bool:
        until = self._paused_until.get(env)
        if until is None:
            return False
        if now >= until:
            del self._paused_until[env]
            self.stats.paused_environments.discard(env)
            return False
        return True

    async def _drain(self, env: str) -> None:
        sending: set[asyncio.Task] = set()
        failed = False
        try:
            while True:
                # After an unexpected error (e.g. the disk is full) take no new batches until the
                # next tick, rather than spinning on the same batch.
                if not failed and not self._is_paused(env, self.clock.now()):
                    room = self.settings.max_in_flight - len(sending)
                    for batch in self.outbox.oldest_batches(env, self._in_flight, room):
                        self._in_flight.add(batch.seq)
                        sending.add(asyncio.create_task(self._deliver(batch)))
                if not sending:
                    return
                done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is not None:
                        failed = True
                        log.error("sending a batch of %s failed, kept for the next tick: %r", env, task.exception())
        finally:
            for task in sending:
                task.cancel()
            await asyncio.gather(*sending, return_exceptions=True)

    # --- one batch --------------------------------------------------------------------------

    async def _deliver(self, batch: Batch) -> None:
        """Send one batch until it is delivered, dead-lettered or its environment pauses."""
        try:
            result = await self._send_with_retries(batch)
            status = result.status or 0
            if 200 <= status < 300:
                now = self.clock.now()
                self.outbox.delivered(batch, now)
                self.stats.batches_delivered += 1
                self.stats.last_success_time = now
                self._pause_logged.pop(batch.environment, None)
            elif status in (400, 413):
                await self._reject(batch, result)
            else:  # 401/403/404 or another 4xx: resending the same cannot help soon; keep it
                self._pause(batch.environment, result)
        finally:
            self._in_flight.discard(batch.seq)

    async def _send_with_retries(self, batch: Batch) -> SendResult:
        client = self.client
        assert client is not None
        token = self.settings.tokens[batch.environment]
        body = encode_body(batch.items)
        ambiguous = False
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=self._backoff,
            stop=stop_never,
            before_sleep=self._count_retry,
            sleep=self.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await client.post(token, batch.id, body)
                self.stats.requests[result.label] += 1
                if result.ambiguous and not ambiguous:
                    ambiguous = True
                    self.stats.ambiguous_batches += 1
                if result.retryable:
                    self.outbox.record_attempt(batch.seq, result.error[:500])
                    raise _Retryable(result)
        return result

    def _backoff(self, state: RetryCallState) -> float:
        # Full jitter (uniform in [0, min(cap, initial * 2^n)]) keeps many proxies from retrying in
        # step; the upstream's Retry-After is a floor, even above the cap.
        ceiling = min(self.settings.retry_max, self.settings.retry_initial * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.result.retry_after is not None:
            delay = max(delay, exc.result.retry_after)
        return delay

    def _count_retry(self, state: RetryCallState) -> None:
        self.stats.retries += 1

    async def _reject(self, batch: Batch, result: SendResult) -> None:
        """400/413: split until the rejected items stand alone; those are dead-lettered."""
        if len(batch.items) == 1:
            moved = self.outbox.dead_letter(batch, result.status, result.error[:500], self.clock.now())
            self.stats.dead_lettered_rows += moved
            log.error("upstream refused an item of %s for good (%s); moved to dead_letters",
                      batch.environment, result.error[:200])
            return
        children = self.outbox.split(batch, halves(batch.items), new_batch_id)
        self.stats.batches_split += 1
        self._in_flight.update(c.seq for c in children)  # before any await: the drain must not take them
        for child in children:
            await self._deliver(child)

    def _pause(self, env: str, result: SendResult) -> None:
        now = self.clock.now()
        # Logged once per refusal reason, not on every slow retry; a 2xx resets it.
        if self._pause_logged.get(env) != result.status:
            self._pause_logged[env] = result.status
            log.error(
                "upstream refused environment %r (%s); its batches are kept and retried every %.0f s",
                env, result.error[:200], self.settings.auth_retry_interval,
            )
            self.outbox.set_pause(env, result.error[:200])
        self._paused_until[env] = now + self.settings.auth_retry_interval
        self.stats.paused_environments.add(env)


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
