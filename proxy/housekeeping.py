"""Periodic upkeep of the store that no request waits for: forgetting expired Idempotency-Keys.

Expired keys are already ignored when a post is checked (storage/idempotency.py); pruning only gives
their space back, so it runs rarely.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator

from aiohttp import web

from proxy.state import CLOCK, SETTINGS, STORE

log = logging.getLogger(__name__)

MAX_PRUNE_INTERVAL = 3600.0


def prune_interval(idempotency_window: float) -> float:
    return min(idempotency_window / 4, MAX_PRUNE_INTERVAL)


async def _prune_forever(app: web.Application) -> None:
    store, clock = app[STORE], app[CLOCK]
    interval = prune_interval(app[SETTINGS].idempotency_window)
    while True:
        await asyncio.sleep(interval)
        try:
            pruned = store.prune_idempotency_keys(clock.now())
        except sqlite3.Error as exc:  # e.g. the disk is full: try again next time
            log.warning("pruning idempotency keys failed: %s", exc)
            continue
        if pruned:
            log.info("forgot %d idempotency keys older than the window", pruned)


async def housekeeping_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_prune_forever(app), name="idempotency-key-pruner")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
