"""SDK events and metric imports to LaunchDarkly: stored payloads -> outbox batches -> events_url.

Every flush_interval the store is folded (payloads reach inbound_payloads), the payloads are cut
into batches bounded in events and bytes per (credential, path, headers) and their custom events
counted (proxy/launchdarkly/store/events.py), and each credential's batches are sent by the shared
delivery mechanism (proxy/forwarding/delivery.py: 2xx done, 400/413 split down to the refused
event, 401/403/404 pause that credential only, 429/5xx/network backoff with Retry-After).

A batch's id is its X-LaunchDarkly-Payload-ID: persisted with the batch, so every retry, and a
resend after a crash or restart, carries the same one and LaunchDarkly applies it once. Bodies go
gzip-compressed. Without events_url the cut only counts, and nothing is sent.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from proxy import __version__
from proxy.clock import Clock
from proxy.config import LaunchDarklySettings
from proxy.forwarding import cycle
from proxy.forwarding.delivery import Delivery, RetryPolicy, new_batch_id
from proxy.forwarding.stats import ForwarderStats
from proxy.launchdarkly.credentials import IMPORT, SCOPE_PREFIX, EventCredentials
from proxy.launchdarkly.model.payload import VENDOR, decode_spec
from proxy.launchdarkly.store import events as event_store
from proxy.launchdarkly.upstream.stats import EventStats
from proxy.storage import Store, idempotency
from proxy.storage.outbox import Batch, Outbox
from proxy.upstream.client import SendResult, UpstreamClient

log = logging.getLogger(__name__)

CUT_RESERVE_SHARE = 0.5  # as the Unleash forwarder: the rest of the reserve is for settling batches
REJECTED = frozenset({400, 413})
RETENTION_HOURS_OF_COUNTS = 24 * 90  # metric event counts older than this are pruned by the cut


def payload_id(batch: Batch) -> str:
    """The batch's X-LaunchDarkly-Payload-ID: its persisted id in UUID form."""
    try:
        return str(uuid.UUID(hex=batch.id))
    except ValueError:
        return batch.id


class EventForwarder:
    def __init__(self, ld: LaunchDarklySettings, credentials: EventCredentials, store: Store, clock: Clock,
                 stats: EventStats, retention_hours: int, client: UpstreamClient | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.ld = ld
        self.credentials = credentials
        self.store = store
        self.clock = clock
        self.stats = stats
        self.retention_hours = retention_hours
        self.outbox = Outbox(store, VENDOR)
        self.delivery_stats = ForwarderStats()
        self.client = client
        self.delivery: Delivery | None = None
        if client is not None:
            policy = RetryPolicy(ld.retry_initial, ld.retry_max, ld.auth_retry_interval, ld.events_max_in_flight,
                                 rejected=REJECTED)
            self.delivery = Delivery(self.outbox, self._send_once, policy, clock, self.delivery_stats, sleep,
                                     settled=self._settled)
        self._loop: asyncio.Task | None = None
        self._without_credential: set[str] = set()

    @property
    def forwarding(self) -> bool:
        return self.delivery is not None

    # --- life cycle -------------------------------------------------------------------------

    async def start(self, run_loop: bool = True) -> None:
        if self.client is not None:
            await self.client.open()
            for stream in self.outbox.environments():
                self.outbox.clear_pause(stream)  # keys may have changed since the last run: try again
        if run_loop:
            self._loop = asyncio.create_task(self._run(), name="launchdarkly-events")

    async def _run(self) -> None:
        await cycle.tick_every(self.tick, self.ld.flush_interval, "LaunchDarkly events")

    async def stop(self) -> None:
        """One last cut and send within shutdown_flush_timeout; what is not delivered stays on disk."""
        try:
            await cycle.final_flush(self._loop, self.flush, self.ld.shutdown_flush_timeout, self.outbox,
                                    "LaunchDarkly events")
        finally:
            if self.delivery is not None:
                await self.delivery.cancel()
            if self.client is not None:
                await self.client.close()

    # --- cutting and sending ----------------------------------------------------------------

    async def tick(self) -> None:
        await self.store.fold_in_chunks()
        await self.cut()
        self.drain()

    async def catch_up(self) -> None:
        """Fold and cut now (no send): a read of the counts sees every acknowledged event."""
        await self.store.fold_in_chunks()
        await self.cut()

    async def cut(self) -> None:
        """Cut every stored payload, in bounded transactions."""
        now = self.clock.now()
        while True:
            with self.store.reserve(CUT_RESERVE_SHARE):
                report = self.store.write(event_store.cut, now, self.forwarding, new_batch_id,
                                          self.ld.events_batch_events, self.ld.events_batch_bytes)
            self.stats.cut_events += report.events
            self.stats.counted_metric_events += report.counted
            if not report.more:
                break
            await asyncio.sleep(0)  # let ingest commit between bounded cuts
        horizon = int(now // 3600 * 3600) - self.retention_hours * 3600
        self.store.write(event_store.prune_counts, horizon)
        self.store.write(idempotency.prune_scope, SCOPE_PREFIX, now - self.ld.payload_id_window)

    def drain(self) -> None:
        if self.delivery is None:
            return
        for stream in self.outbox.environments():
            # With auth = "open" an unlisted key travels in its batches (BatchSpec.key).
            if not self.credentials.open and self._credential_of(stream) is None and not stream.endswith(":browser"):
                if stream not in self._without_credential:
                    self._without_credential.add(stream)
                    log.error("LaunchDarkly events of %r: no credential configured for them any more; their batches "
                              "stay on disk until one is", stream)
                continue
            self.delivery.drain(stream)

    async def flush(self) -> int:
        """Cut and send now; returns once every drain is idle, with the batches left on disk."""
        await self.tick()
        if self.delivery is not None:
            await self.delivery.idle()
        return self.outbox.pending_batch_count()

    def _credential_of(self, stream: str, spec_key: str | None = None) -> str | None:
        if spec_key is not None:
            return spec_key
        environment, _, kind = stream.rpartition(":")
        if kind == IMPORT:
            return self.ld.import_token
        return self.credentials.secret_of(environment, kind)

    async def _send_once(self, batch: Batch) -> SendResult:
        assert self.client is not None
        spec = decode_spec(batch.items[0].kind)
        if spec.diagnostic:
            body = batch.items[0].item.encode()
        else:
            body = ("[" + ",".join(item.item for item in batch.items) + "]").encode()
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                   "X-LaunchDarkly-Payload-ID": payload_id(batch),
                   "User-Agent": spec.user_agent or f"metrics-proxy/{__version__}"}
        if spec.schema is not None:
            headers["X-LaunchDarkly-Event-Schema"] = spec.schema
        if spec.tags is not None:
            headers["X-LaunchDarkly-Tags"] = spec.tags
        token = self._credential_of(batch.environment, spec.key)
        return await self.client.send("POST", spec.path, token, gzip.compress(body, compresslevel=6, mtime=0),
                                      headers)

    async def _settled(self, batch: Batch, result: SendResult) -> None:
        status = result.status or 0
        if not 200 <= status < 300:
            self.stats.dropped[f"rejected_{status}"] += len(batch.items)


def cleanup_context(forwarder: EventForwarder):
    """For app.cleanup_ctx, appended after the store's: it stops (final flush) before the store closes."""

    async def events_ctx(app: web.Application) -> AsyncIterator[None]:
        if forwarder.store.writer is None:
            yield
            return
        await forwarder.start()
        yield
        await forwarder.stop()

    return events_ctx
