"""Plain counters of the LaunchDarkly write path; proxy/launchdarkly/room.py renders them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class WriteStats:
    # Writes answered, by outcome: "local" (no upstream), "upstream" (relayed), "queued".
    writes: Counter[str] = field(default_factory=Counter)
    # Replays of queued writes, by outcome: "delivered", "dead_letter".
    replays: Counter[str] = field(default_factory=Counter)
    refreshes: Counter[str] = field(default_factory=Counter)  # "ok", "failed"


@dataclass(slots=True)
class EventStats:
    """SDK events and metric imports, by credential kind (server, mobile, browser, import)."""

    payloads: Counter[str] = field(default_factory=Counter)  # stored
    events: Counter[str] = field(default_factory=Counter)  # in stored payloads
    duplicates: Counter[str] = field(default_factory=Counter)  # a repeated Payload-ID: 202, not stored again
    refused: Counter[str] = field(default_factory=Counter)  # bad bodies (400)
    # Events given up, by reason: "rejected_400", "rejected_413" (dead-lettered after the upstream
    # refused them alone), "no_credential" (an environment no longer configured).
    dropped: Counter[str] = field(default_factory=Counter)
    counted_metric_events: int = 0  # custom events counted against a metric
    cut_events: int = 0  # events moved from the store into batches (or counted only, without events_url)
