"""Plain counters of the forwarder; the telemetry collector turns them into metric families."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class ForwarderStats:
    requests: Counter[str] = field(default_factory=Counter)  # upstream answers by status ("202", "network")
    retries: int = 0
    ambiguous_batches: int = 0  # a timeout or reset after the body was sent: maybe applied, resent
    dead_lettered_rows: int = 0
    batches_delivered: int = 0
    batches_split: int = 0
    paused_environments: set[str] = field(default_factory=set)
    environments_without_token: set[str] = field(default_factory=set)
    last_success_time: float = 0.0  # epoch seconds of the last 2xx, 0 before the first
