"""Every write of the LaunchDarkly API goes through here.

Without an upstream the local store is authoritative: the change commits, then the answer goes.
With one ([launchdarkly] api_url and api_token), a write goes to LaunchDarkly first; its status,
body and rate-limit headers are relayed, and a 2xx answer becomes the local copy. When LaunchDarkly
cannot be reached (no connection, a timeout, a 5xx) the write is applied locally and queued in the
same transaction, and answered 202 with the local representation and the header PENDING_HEADER.
Once a project has writes queued, its later writes queue behind them (never overtaking), and they
replay one at a time through the shared delivery mechanism (proxy/forwarding/delivery.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.clock import Clock
from proxy.forwarding.delivery import Delivery, RetryPolicy, new_batch_id
from proxy.forwarding.stats import ForwarderStats
from proxy.launchdarkly.store import queue
from proxy.launchdarkly.upstream.stats import WriteStats
from proxy.storage import StorageUnavailable, Store
from proxy.storage.outbox import Batch, Outbox
from proxy.upstream.client import SendResult, UpstreamClient

log = logging.getLogger(__name__)

Connection = Any  # the writer connection a store function is handed (only proxy/launchdarkly/store touches it)

PENDING_HEADER = "X-Metrics-Proxy-Pending"
RELAYED_HEADERS = ("Retry-After", "X-Ratelimit-Global-Remaining", "X-Ratelimit-Global-Limit",
                   "X-Ratelimit-Route-Remaining", "X-Ratelimit-Route-Limit", "X-Ratelimit-Reset",
                   "X-Ratelimit-Auth-Token-Limit", "X-Ratelimit-Auth-Token-Remaining", "X-Ratelimit-Auth-Token-Reset")
# A replay LaunchDarkly refuses for good goes to the dead letters: a bad body, an unknown resource,
# a conflict (409), a patch it cannot apply (422). 401/403 pause the queue (the token may be fixed).
REJECTED = frozenset({400, 404, 405, 409, 410, 413, 415, 422})


@dataclass(frozen=True, slots=True)
class Write:
    """One write: what goes upstream, and what it does to the local store.

    `apply(db)` makes the local change in the caller's transaction and returns the local answer's
    body (None for a delete)."""

    project: str
    method: str
    path: str
    body: bytes | None
    api_version: str
    apply: Callable[[Connection], bytes | None]
    status: int  # the local answer's status: 201, 200 or 204

    def item(self) -> str:
        return json.dumps(self.head() | {"body": None if self.body is None else self.body.decode()})

    def head(self) -> dict:
        return {"method": self.method, "path": self.path, "apiVersion": self.api_version,
                "project": self.project}


class Writes:
    def __init__(self, store: Store, clock: Clock, stats: WriteStats, client: UpstreamClient | None = None,
                 token: str | None = None, policy: RetryPolicy | None = None,
                 adopter: Callable[[dict, bytes], Callable[[Connection], None] | None] | None = None,
                 refresh: Callable[[str], Awaitable[None]] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 locks: defaultdict[str, asyncio.Lock] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.stats = stats
        self.client = client
        self.token = token
        self.outbox = Outbox(store, queue.VENDOR)
        # One turn per project: its writes one at a time (none overtakes one still on its way), and
        # its refreshes between them (the refresher shares these).
        self.locks = locks if locks is not None else defaultdict(asyncio.Lock)
        # How LaunchDarkly's 2xx answer to a write ({method, path, ...}) becomes the local copy,
        # and how a project is refreshed after a replay was refused.
        self._adopter = adopter
        self._refresh = refresh
        self.delivery_stats = ForwarderStats()  # Delivery's own bookkeeping; the room counts in `stats`
        self.delivery: Delivery | None = None
        if client is not None:
            assert policy is not None
            self.delivery = Delivery(self.outbox, self._send_once, policy, clock, self.delivery_stats, sleep,
                                     settled=self._settled)

    # --- answering a write ------------------------------------------------------------------

    async def perform(self, write: Write) -> web.Response:
        if self.client is None:
            body = self.store.write(write.apply)
            self.stats.writes["local"] += 1
            return _answer(write.status, body)
        async with self.locks[write.project]:
            if self.store.on_writer(queue.queued_count, write.project) == 0:
                result = await self._send(write.method, write.path, write.body, write.api_version)
                if result.reply is not None and not unreachable(result):
                    return self._relay(write, result)
            return self._queue(write)

    def _relay(self, write: Write, result: SendResult) -> web.Response:
        reply = result.reply
        assert reply is not None
        self.stats.writes["upstream"] += 1
        if 200 <= reply.status < 300:
            self._keep(write.head(), reply.body)
        headers = {name: reply.headers[name] for name in RELAYED_HEADERS if name in reply.headers}
        content_type = reply.headers.get("Content-Type", "application/json").split(";")[0]
        body = reply.body if reply.status != 204 else None
        return web.Response(status=reply.status, body=body, headers=headers,
                            content_type=content_type if body else None)

    def _queue(self, write: Write) -> web.Response:
        batch_id = new_batch_id()
        body = self.store.write(queue.apply_and_queue, write.apply, write.project, write.item(),
                                self.clock.now(), batch_id)
        self.stats.writes["queued"] += 1
        log.warning("LaunchDarkly unreachable: %s %s applied locally and queued as %s", write.method, write.path,
                    batch_id)
        if self.delivery is not None:
            self.delivery.drain(write.project)
        response = _answer(202, body)
        response.headers[PENDING_HEADER] = batch_id
        return response

    async def _send(self, method: str, path: str, body: bytes | None, api_version: str) -> SendResult:
        assert self.client is not None
        headers = {"LD-API-Version": api_version}
        if body is not None:
            headers["Content-Type"] = "application/json"
        return await self.client.send(method, path, self.token, body, headers)

    def _keep(self, item: dict, body: bytes) -> None:
        """LaunchDarkly's answer as the local copy (if it cannot be written, the next refresh brings it)."""
        keep = None if self._adopter is None else self._adopter(item, body)
        if keep is None:
            return
        try:
            self.store.write(keep)
        except StorageUnavailable as exc:
            log.warning("could not keep LaunchDarkly's answer to %s %s locally: %s", item["method"], item["path"], exc)

    # --- replaying the queue ----------------------------------------------------------------

    def start(self) -> None:
        """Replay what an earlier run queued (a restart clears the pauses it recorded)."""
        if self.delivery is None:
            return
        for project in self.outbox.environments():
            self.outbox.clear_pause(project)
            self.delivery.drain(project)

    def tick(self) -> None:
        """Start the drain of every project with writes queued (a paused one waits its pause out)."""
        if self.delivery is None:
            return
        for project in self.outbox.environments():
            self.delivery.drain(project)

    async def stop(self) -> None:
        if self.delivery is not None:
            await self.delivery.cancel()

    async def _send_once(self, batch: Batch) -> SendResult:
        item = json.loads(batch.items[0].item)
        body = None if item["body"] is None else item["body"].encode()
        return await self._send(item["method"], item["path"], body, item["apiVersion"])

    async def _settled(self, batch: Batch, result: SendResult) -> None:
        item = json.loads(batch.items[0].item)
        status = result.status or 0
        if 200 <= status < 300:
            self.stats.replays["delivered"] += 1
            if result.reply is not None:
                self._keep(item, result.reply.body)
            return
        self.stats.replays["dead_letter"] += 1
        log.error("LaunchDarkly refused the queued write %s %s (%s); it is in the dead letters",
                  item["method"], item["path"], result.error[:200])
        if self._refresh is not None:  # the local copy holds what LaunchDarkly refused: take its own
            try:
                await self._refresh(item["project"])
            except Exception as exc:  # noqa: BLE001 - a failed refresh is retried on its interval
                log.warning("refreshing project %r after a refused write failed: %s", item["project"], exc)


def unreachable(result: SendResult) -> bool:
    """No answer, a timeout or a 5xx: LaunchDarkly cannot take the write now (a 429 is relayed)."""
    return result.status is None or result.status == 408 or result.status >= 500


def _answer(status: int, body: bytes | None) -> web.Response:
    if body is None:
        return web.Response(status=204 if status in (200, 204) else status)
    return web.Response(status=status, body=body, content_type="application/json")
