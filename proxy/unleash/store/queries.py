"""Read queries, run on a read-only aiosqlite connection so they never block the event loop."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import aiosqlite


class Windowed(NamedTuple):
    """An answer over a window ending "now", and the first moment at which the clock moving on
    can change it (a row leaves the window, a minute or hour bucket boundary passes) while the
    data stays the same; the answer cache serves it until then (proxy/api/answer_cache.py)."""

    answer: Any
    valid_until: float


def leaves_window(oldest_inside: float | None, window: float, otherwise: float = math.inf) -> float:
    """When the oldest row inside a window `>= now - window` drops out of it."""
    return otherwise if oldest_inside is None else min(otherwise, oldest_inside + window)


def minute_floor(seconds: float) -> int:
    return int(seconds // 60 * 60)


async def _window(db: aiosqlite.Connection, since_minute: int) -> dict[str, dict[str, int]]:
    cursor = await db.execute(
        """SELECT feature_name, sum(yes), sum(no) FROM minute_flag_totals
           WHERE minute >= ? GROUP BY feature_name ORDER BY feature_name""",
        (since_minute,),
    )
    return {name: {"yes": yes, "no": no} for name, yes, no in await cursor.fetchall()}


async def feature_toggle_windows(db: aiosqlite.Connection, now: float) -> dict[str, dict[str, dict[str, int]]]:
    """Sliding windows over per-minute counts (keyed by the minute the proxy received them).

    Resolution is one minute: lastMinute covers the current and the previous minute bucket."""
    return {
        "lastHour": await _window(db, minute_floor(now - 3600)),
        "lastMinute": await _window(db, minute_floor(now - 60)),
    }


async def totals(db: aiosqlite.Connection) -> list[tuple[str, str, str, int, int]]:
    cursor = await db.execute(
        """SELECT environment, app_name, feature_name, sum(yes), sum(no) FROM hourly_counts
           GROUP BY environment, app_name, feature_name ORDER BY 1, 2, 3"""
    )
    return [tuple(row) for row in await cursor.fetchall()]
