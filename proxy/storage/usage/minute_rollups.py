"""Per-minute totals by flag and by app, kept beside `minute_counts` for the sliding windows.

Why: `minute_counts` has one row per environment x app x flag x minute, so an hour of 100 apps x
1,000 flags reporting every minute is 6 million rows, and summing them per flag on every
`feature-toggles` read took seconds. These two rollups hold the same counts with the other
dimensions summed away (flags x 60 and apps x 60 rows per hour) and are written in the same fold
transaction, so they always agree with `minute_counts`.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict

from proxy.storage.usage.aggregate import Deltas

_UPSERT = """
    INSERT INTO {table} ({column}, minute, yes, no) VALUES (?, ?, ?, ?)
    ON CONFLICT ({column}, minute) DO UPDATE SET yes = yes + excluded.yes, no = no + excluded.no
"""


def write_minute_rollups(db: sqlite3.Connection, deltas: Deltas) -> None:
    """Add the deltas' per-minute counts to both rollups, inside the caller's transaction."""
    by_flag: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    by_app: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for (_env, app, flag, minute), (yes, no) in deltas.minute.items():
        flag_total, app_total = by_flag[(flag, minute)], by_app[(app, minute)]
        flag_total[0] += yes
        flag_total[1] += no
        app_total[0] += yes
        app_total[1] += no
    db.executemany(_UPSERT.format(table="minute_flag_totals", column="feature_name"),
                   [(*key, yes, no) for key, (yes, no) in by_flag.items()])
    db.executemany(_UPSERT.format(table="minute_app_totals", column="app_name"),
                   [(*key, yes, no) for key, (yes, no) in by_app.items()])
