"""Time comes from one injectable clock, so tests move time instead of sleeping."""

from __future__ import annotations

import time


class Clock:
    """Wall-clock seconds since the epoch."""

    def now(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock the tests set and advance by hand."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def set(self, when: float) -> None:
        self._now = float(when)
