"""A vendor forwarder's life: a tick (fold, cut, start the drains) every flush interval, and one
last flush at shutdown within a deadline. Shared so that every vendor logs and gives up alike:
a failing tick is logged once per run of failures, and nothing a deadline cuts short is lost (it
stays in the outbox for the next start)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from proxy.storage import StorageUnavailable, outbox

log = logging.getLogger(__name__)


async def tick_every(tick: Callable[[], Awaitable[object]], interval: float, what: str) -> None:
    """Run `tick` every `interval` seconds until cancelled. A StorageUnavailable (e.g. a full disk
    while cutting: nothing moved) is logged once, and again when ticks work again."""
    failing = False
    while True:
        try:
            await tick()
        except StorageUnavailable as exc:
            if not failing:
                log.error("%s: cutting batches failed, retried every flush interval: %s", what, exc)
            failing = True
        else:
            if failing:
                log.info("%s: cutting batches works again", what)
            failing = False
        await asyncio.sleep(interval)


async def final_flush(loop: asyncio.Task | None, flush: Callable[[], Awaitable[object]], timeout: float,
                      box: outbox.Outbox, what: str) -> None:
    """Stop the tick loop, then one last flush within `timeout`; what is not delivered stays on disk."""
    if loop is not None:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    try:
        await asyncio.wait_for(flush(), timeout)
    except TimeoutError:
        log.warning("%s: the shutdown flush did not finish in %.0f s; %d batches stay on disk for the next start",
                    what, timeout, box.pending_batch_count())
    except StorageUnavailable as exc:
        log.error("%s: the shutdown flush failed; what was not sent stays on disk: %s", what, exc)
