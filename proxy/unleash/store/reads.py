"""Queries behind the original Unleash metrics API (`/api/client/...` read shapes).

Each takes the read-only connection (Store.read folds first, so every acknowledged count is in)
and returns rows, aggregated in SQL; proxy/unleash/api/read_answers.py shapes them into the answer
Structs. Where an answer lists many names per row (1,000 flags per app), SQLite aggregates them
into one JSON array of strings per row, which msgspec decodes far faster than the rows themselves
would arrive one by one.
"""

from __future__ import annotations

from typing import NamedTuple

import aiosqlite
import msgspec

_decode_names = msgspec.json.Decoder(list[str]).decode

# One row per application known from its SDK instances: first registration, last sighting and the
# strategies its most recent registration declared (Unleash keeps the latest list, not a union).
APPS_CTE = """
    apps AS (
        SELECT app_name,
               min(created_at) AS created_at,
               max(last_seen) AS last_seen,
               (SELECT latest.strategies FROM instances AS latest
                 WHERE latest.app_name = instances.app_name AND latest.strategies IS NOT NULL
                 ORDER BY latest.last_seen DESC LIMIT 1) AS strategies
          FROM instances GROUP BY app_name
    )
"""


def names(text: str | None) -> list[str]:
    """A JSON array of strings from SQLite (json_group_array, or a stored strategies list)."""
    return _decode_names(text) if text else []


class AppSeen(NamedTuple):
    app_name: str
    flags: list[str]
    counted: int  # yes + no received in the window's minutes


class AppRow(NamedTuple):
    app_name: str
    created_at: float
    last_seen: float
    strategies: list[str]


class InstanceRow(NamedTuple):
    instance_id: str
    client_ip: str | None
    last_seen: float
    created_at: float


class FlagApps(NamedTuple):
    feature_name: str
    apps: list[str]


class PairSeen(NamedTuple):
    """A flag x app pair whose app has no instances left (pruned before the flag's sightings)."""

    feature_name: str
    app_name: str
    first_seen: float
    last_seen: float


async def seen_toggles(db: aiosqlite.Connection, since: float, since_minute: int) -> tuple[list[AppSeen], float | None]:
    """Per app, the flags it reported since `since` and its counts since `since_minute`; and the
    oldest sighting inside the window (when the clock alone changes the answer)."""
    rows = await db.execute_fetchall(
        # json_group_array(DISTINCT ...) drops the same flag seen in several environments while
        # walking flag_seen_by_app in (app, flag) order: no sort, no per-pair group (71 -> 48 ms
        # with 100 apps x 1,000 flags; a covering (app, flag, last_seen) index would make it 25 ms,
        # at the price of one more index entry rewritten per flag in every fold).
        """WITH per_app AS (
                SELECT app_name, json_group_array(DISTINCT feature_name) AS toggles
                  FROM flag_seen INDEXED BY flag_seen_by_app
                 WHERE last_seen >= :since GROUP BY app_name),
            counted AS (SELECT app_name, sum(yes + no) AS total FROM minute_app_totals
                         WHERE minute >= :minute GROUP BY app_name)
           SELECT per_app.app_name, per_app.toggles, coalesce(counted.total, 0)
             FROM per_app LEFT JOIN counted ON counted.app_name = per_app.app_name
            ORDER BY per_app.app_name""",
        {"since": since, "minute": since_minute},
    )
    oldest = await db.execute_fetchall("SELECT min(last_seen) FROM flag_seen WHERE last_seen >= ?", (since,))
    return [AppSeen(app, names(toggles), total) for app, toggles, total in rows], oldest[0][0]


async def applications(db: aiosqlite.Connection, since: float, strategy: str | None) -> list[AppRow]:
    """Applications seen since `since`, optionally only those implementing `strategy`."""
    rows = await db.execute_fetchall(
        f"""WITH {APPS_CTE}
            SELECT app_name, created_at, last_seen, strategies FROM apps
             WHERE last_seen >= :since
               AND (:strategy IS NULL
                    OR EXISTS (SELECT 1 FROM json_each(apps.strategies) WHERE value = :strategy))
             ORDER BY app_name""",
        {"since": since, "strategy": strategy},
    )
    return [AppRow(app, created, seen, names(strategies)) for app, created, seen, strategies in rows]


async def application(db: aiosqlite.Connection, app: str) -> tuple[list[InstanceRow], list[str], list[str]] | None:
    """One application's instances, latest declared strategies and every flag it reported; None
    if the proxy never heard of it."""
    # With max(), SQLite takes the bare columns from the row holding the maximum: the latest IP.
    instances = await db.execute_fetchall(
        """SELECT instance_id, client_ip, max(last_seen) AS seen, min(created_at) FROM instances
            WHERE app_name = ? GROUP BY instance_id ORDER BY seen DESC, instance_id""",
        (app,),
    )
    toggles = await db.execute_fetchall(
        "SELECT DISTINCT feature_name FROM flag_seen WHERE app_name = ? ORDER BY feature_name", (app,)
    )
    if not instances and not toggles:
        return None
    latest = await db.execute_fetchall(
        """SELECT strategies FROM instances WHERE app_name = ? AND strategies IS NOT NULL
            ORDER BY last_seen DESC LIMIT 1""",
        (app,),
    )
    strategies = names(latest[0][0]) if latest else []
    return [InstanceRow(*row) for row in instances], strategies, [name for (name,) in toggles]


async def seen_apps(db: aiosqlite.Connection) -> tuple[list[AppRow], list[FlagApps], list[PairSeen]]:
    """For every flag still in the history, the apps that reported it (in name order); the apps
    known from their instances; and the pairs whose app has none left."""
    apps = await db.execute_fetchall(
        f"WITH {APPS_CTE} SELECT app_name, created_at, last_seen, strategies FROM apps ORDER BY app_name"
    )
    flags = await db.execute_fetchall(
        """SELECT feature_name, json_group_array(app_name) FROM
              (SELECT DISTINCT feature_name, app_name FROM flag_seen ORDER BY feature_name, app_name)
            GROUP BY feature_name ORDER BY feature_name"""
    )
    orphans = await db.execute_fetchall(
        """SELECT feature_name, app_name, min(first_seen), max(last_seen) FROM flag_seen
            WHERE app_name NOT IN (SELECT app_name FROM instances)
            GROUP BY feature_name, app_name"""
    )
    return (
        [AppRow(app, created, seen, names(strategies)) for app, created, seen, strategies in apps],
        [FlagApps(flag, names(found)) for flag, found in flags],
        [PairSeen(*row) for row in orphans],
    )
