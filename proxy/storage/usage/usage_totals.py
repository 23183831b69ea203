"""All-time usage per app and flag, for `feature_toggle_usage_total`.

A scrape reads one row per (app, flag) here instead of summing every stored hour; the fold keeps
it current in the same transaction that writes the hourly counts.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict

import aiosqlite

from proxy.storage.usage.aggregate import Deltas

_UPSERT = """
    INSERT INTO usage_totals (app_name, feature_name, yes, no) VALUES (?, ?, ?, ?)
    ON CONFLICT (app_name, feature_name) DO UPDATE SET
        yes = yes + excluded.yes, no = no + excluded.no
"""


def write_usage_totals(db: sqlite3.Connection, deltas: Deltas) -> None:
    """Add the deltas' counts inside the caller's (fold) transaction."""
    totals: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (_env, app, flag, _hour), agg in deltas.hourly.items():
        pair = totals[(app, flag)]
        pair[0] += agg[0]
        pair[1] += agg[1]
    db.executemany(_UPSERT, [(app, flag, yes, no) for (app, flag), (yes, no) in totals.items()])


async def busiest_usage(db: aiosqlite.Connection, limit: int) -> tuple[list[tuple[str, str, int, int]], int]:
    """Up to `limit` (app, flag, yes, no) rows, busiest first when some must be left out (else in
    key order, sparing the sort), and how many rows were left out."""
    cursor = await db.execute("SELECT count(*) FROM usage_totals")
    total = (await cursor.fetchone())[0]
    order = "ORDER BY yes + no DESC, 1, 2" if total > limit else ""
    cursor = await db.execute(f"SELECT app_name, feature_name, yes, no FROM usage_totals {order} LIMIT ?", (limit,))
    cursor.row_factory = None  # plain tuples: 10,000 sqlite3.Row objects cost more than the query
    return await cursor.fetchall(), max(0, total - limit)


async def totals(db: aiosqlite.Connection) -> list[tuple[str, str, str, int, int]]:
    """(environment, app, feature, yes, no) summed over every stored hour."""
    cursor = await db.execute(
        """SELECT environment, app_name, feature_name, sum(yes), sum(no) FROM hourly_counts
           GROUP BY environment, app_name, feature_name ORDER BY 1, 2, 3"""
    )
    return [tuple(row) for row in await cursor.fetchall()]
