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
