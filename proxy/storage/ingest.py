"""The one interface ingest handlers commit through, whatever process they run in.

The primary's `Store` and an ingest worker's `ShardStore` (storage/shards/shard_store.py) both
implement it: `append` returns only after the entries are durable, so a handler answers 202 after
it, and raises `StorageUnavailable` when they could not be written (nothing is acknowledged)."""

from __future__ import annotations

from typing import Protocol

from proxy.storage.idempotency import IdempotencyClaim
from proxy.storage.journal import JournalEntry
from proxy.storage.usage.impact import SeriesGuard


class IngestSink(Protocol):
    # The impact-metric series already known, so a post beyond max_impact_series is cut before it is
    # written (the worker's copy is refreshed from the primary's file).
    impact_guard: SeriesGuard

    async def append(self, entries: list[JournalEntry], claim: IdempotencyClaim | None = None) -> bool:
        """Durably record `entries`; False when `claim`'s Idempotency-Key was recorded before
        (acknowledged, not counted again)."""
        ...
