"""The sliding windows behind /api/client/metrics/feature-toggles, on the read-only connection."""

from __future__ import annotations

from typing import NamedTuple

import aiosqlite


def minute_floor(seconds: float) -> int:
    return int(seconds // 60 * 60)


class Window(NamedTuple):
    """(yes, no) per flag, the first `max_flags` by name; `total` counts every flag of the window
    when it holds more (None: the counts are all there)."""

    counts: dict[str, tuple[int, int]]
    total: int | None


async def _window(db: aiosqlite.Connection, since_minute: int, max_flags: int) -> Window:
    # In key order (feature_name, minute) SQLite stops after the flags it lists, whatever the table holds.
    cursor = await db.execute(
        """SELECT feature_name, sum(yes), sum(no) FROM minute_flag_totals
           WHERE minute >= ? GROUP BY feature_name ORDER BY feature_name LIMIT ?""",
        (since_minute, max_flags + 1),
    )
    rows = await cursor.fetchall()
    total = None
    if len(rows) > max_flags:
        del rows[max_flags:]
        cursor = await db.execute("SELECT count(DISTINCT feature_name) FROM minute_flag_totals WHERE minute >= ?",
                                  (since_minute,))
        total = (await cursor.fetchone())[0]
    return Window({name: (yes, no) for name, yes, no in rows}, total)


async def feature_toggle_windows(db: aiosqlite.Connection, now: float, max_flags: int) -> dict[str, Window]:
    """(yes, no) per flag in the `lastHour` and `lastMinute` windows: sliding windows over per-minute counts (keyed by the minute the proxy received them).

    Resolution is one minute: lastMinute covers the current and the previous minute bucket. Each
    window lists at most `max_flags` flags (read_max_flags), the first by name."""
    return {
        "lastHour": await _window(db, minute_floor(now - 3600), max_flags),
        "lastMinute": await _window(db, minute_floor(now - 60), max_flags),
    }
