"""The sliding windows behind /api/client/metrics/feature-toggles, on the read-only connection."""

from __future__ import annotations

import aiosqlite


def minute_floor(seconds: float) -> int:
    return int(seconds // 60 * 60)


async def _window(db: aiosqlite.Connection, since_minute: int) -> dict[str, tuple[int, int]]:
    cursor = await db.execute(
        """SELECT feature_name, sum(yes), sum(no) FROM minute_flag_totals
           WHERE minute >= ? GROUP BY feature_name ORDER BY feature_name""",
        (since_minute,),
    )
    return {name: (yes, no) for name, yes, no in await cursor.fetchall()}


async def feature_toggle_windows(db: aiosqlite.Connection, now: float) -> dict[str, dict[str, tuple[int, int]]]:
    """(yes, no) per flag in the `lastHour` and `lastMinute` windows: sliding windows over per-minute counts (keyed by the minute the proxy received them).

    Resolution is one minute: lastMinute covers the current and the previous minute bucket."""
    return {
        "lastHour": await _window(db, minute_floor(now - 3600)),
        "lastMinute": await _window(db, minute_floor(now - 60)),
    }
